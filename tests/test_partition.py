"""Partitioned execution without a mesh: cut points on graphs whose structure is known, every zoo
network's cut points, part features and plan costs, sub-graphs cut from real files (FP32, INT8,
FP16), NeuroSurgeon's regressions and split, MOSAIC's dynamic program, AutoScale's split actions."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.common.accuracy import expected_accuracy
from services.common.config_files import load_profile
from services.common.features.partition import MAX_CUTS, all_cut_points, find_cut_points
from services.common.model_store import ModelStore
from services.common.zoo import ZOO_NAMES, build_model, zoo_cut_points, zoo_features
from services.core import costmodel
from services.core.costmodel import Mesh
from services.core.partition import (
    PartitionError,
    PlanCostTable,
    check_plan,
    copy_cost,
    partition_features,
    plan_cost,
)
from services.core.policies import make_policy
from services.core.policies.base import Candidate, DecisionContext
from services.core.policies.mosaic import phone_options, slice_program
from services.core.policies.neurosurgeon import NeuroSurgeonParams, NeuroSurgeonPolicy, counts_between, fit_layer_model
from services.core.policies.splits import split_candidates
from services.core.scenarios import qos_s
from services.core.schemas import (
    CutPoint,
    Location,
    ModelFeatures,
    Partition,
    Plan,
    Precision,
    RuntimeConditions,
    Target,
)
from services.core.state import state_index

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _w(name: str, *shape: int) -> TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.3).astype(np.float32), name)


def _model(nodes: list[onnx.NodeProto], out_shape: list[int], inits: list[TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", F, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", F, out_shape)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def chain_cnn() -> onnx.ModelProto:
    """conv 3->16 s2, relu, depthwise + pointwise 16->8 (one separable layer), relu, GAP, FC 8->10."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["cd"], ["rd"]),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["cp"], ["rp"]),
        helper.make_node("GlobalAveragePool", ["rp"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = [_w("w1", 16, 3, 3, 3), _w("b1", 16), _w("wd", 16, 1, 3, 3), _w("bd", 16)]
    inits += [_w("wp", 8, 16, 1, 1), _w("bp", 8), _w("wf", 10, 8), _w("bf", 10)]
    return _model(nodes, [1, 10], inits)


def residual_cnn() -> onnx.ModelProto:
    """conv, relu, [conv, relu, conv] + skip, relu, conv: inside the block two tensors are live."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "r1"], ["a"]),
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("Conv", ["ra", "w4"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = [_w("w1", 4, 3, 3, 3), _w("w2", 4, 4, 3, 3), _w("w3", 4, 4, 3, 3), _w("w4", 2, 4, 1, 1)]
    return _model(nodes, [1, 2, 16, 16], inits)


# --------------------------------------------------------------------------- cut points


def test_chain_cut_points_count_layers_and_bytes_on_each_side() -> None:
    m = chain_cnn()
    cuts = all_cut_points(m)
    names = [c.name for c in cuts]
    # one cut per stretch of layers, after the activation; never between a depthwise conv and the
    # pointwise conv it is counted with (one separable layer)
    assert names == ["r1", "f"]
    r1, f = cuts
    assert r1.tensors[0].shape == [1, 16, 8, 8] and r1.bytes == 16 * 8 * 8 * 4
    assert (r1.before.conv, r1.after.conv, r1.after.fc) == (1, 1, 1)
    assert f.bytes == 8 * 4 and (f.before.conv, f.before.fc, f.after.fc) == (2, 0, 1)
    total = extract_total(m)
    for c in cuts:
        assert c.before.macs + c.after.macs == total.macs
        assert c.before.conv_macs + c.before.fc_macs + c.before.rc_macs == c.before.macs
    # offered: each smaller than the ones before it, within the byte cap
    offered = find_cut_points(m, 3 * 16 * 16 * 4)
    assert [c.name for c in offered] == ["r1", "f"]
    assert [c.name for c in find_cut_points(m, 8)] == ["f"]  # r1's 4 KiB is over 4 x an 8-byte input


def extract_total(m: onnx.ModelProto) -> ModelFeatures:
    from services.common.features import extract_features

    return extract_features(m)


def test_residual_blocks_are_cut_only_where_one_tensor_crosses() -> None:
    m = residual_cnn()
    one = [c.name for c in all_cut_points(m, max_tensors=1)]
    assert one == ["r1", "ra"]  # inside the block the skip tensor r1 is live too
    two = all_cut_points(m, max_tensors=2)
    inside = [c for c in two if len(c.tensors) == 2]
    assert inside and all({t.name for t in c.tensors} >= {"r1"} for c in inside)
    assert all(c.name == "+".join(t.name for t in c.tensors) for c in two)


def test_graphs_without_cut_points() -> None:
    # one layer: nothing on one side of any cut
    single = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])], [1, 2, 16, 16], [_w("w", 2, 3, 1, 1)]
    )
    assert all_cut_points(single) == []
    # control flow: no cut points at all
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", F, None)]
    )
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=then)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]), node],
        "if",
        [
            helper.make_tensor_value_info("x", F, [1, 3, 4, 4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", F, None)],
        [_w("w", 3, 3, 1, 1)],
    )
    assert all_cut_points(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])) == []
    assert zoo_cut_points("mobilebert") == []  # its hidden state is 256x its token ids: no cut is worth it


@pytest.mark.parametrize("name", [*ZOO_NAMES, "digits"])
def test_zoo_cut_points_are_consistent(name: str) -> None:
    f = zoo_features(name)
    cuts = zoo_cut_points(name)
    assert len(cuts) <= MAX_CUTS
    tensors = {o for n in build_model(name, weights=False).graph.node for o in n.output}
    for a, b in itertools.pairwise(cuts):
        assert b.bytes < a.bytes and b.before.macs > a.before.macs
    for c in cuts:
        assert {t.name for t in c.tensors} <= tensors
        assert c.bytes == sum(math.prod(t.shape) * 4 for t in c.tensors) == sum(t.bytes for t in c.tensors)
        assert c.bytes <= 4 * f.input_bytes
        for k in ("conv", "fc", "rc", "macs"):
            assert getattr(c.before, k) + getattr(c.after, k) == getattr(f, k), (name, c.name, k)
        assert c.before.conv + c.before.fc + c.before.rc > 0 and c.after.conv + c.after.fc + c.after.rc > 0
    if name != "mobilebert":
        assert cuts, f"{name} offers no cut point"


# --------------------------------------------------------------------------- part features and plan costs


def _mesh(device: str = "mi8pro") -> Mesh:
    return Mesh(load_profile(device), load_profile("galaxy_tab_s6"), load_profile("cloud_p100"))


def _cands(mesh: Mesh, model: str) -> tuple[Candidate, ...]:
    out = []
    for t in mesh.targets(zoo_features(model)):
        acc = expected_accuracy(model, Precision(t.precision))
        if acc is not None:
            out.append(Candidate(t, float(acc.top1)))
    return tuple(out)


def _target(cands: tuple[Candidate, ...], action: str) -> Target:
    return next(c.target for c in cands if c.target.id == action)


def test_part_features_add_up_and_name_the_field_at_fault() -> None:
    f, cuts = zoo_features("mobilenet_v2"), zoo_cut_points("mobilenet_v2")
    bounds: list[str | None] = [None, *(c.name for c in cuts), None]
    parts = [partition_features(f, cuts, Partition(start=a, end=b)) for a, b in itertools.pairwise(bounds)]
    for k in ("conv", "fc", "rc", "macs"):
        assert sum(getattr(p, k) for p in parts) == getattr(f, k)
    assert parts[0].input_bytes == f.input_bytes and parts[-1].output_bytes == f.output_bytes
    assert [p.output_bytes for p in parts[:-1]] == [c.bytes for c in cuts] == [p.input_bytes for p in parts[1:]]
    with pytest.raises(PartitionError) as e:
        partition_features(f, cuts, Partition(start="nope"))
    assert e.value.field == "partition.start" and e.value.status == 422
    with pytest.raises(PartitionError) as e:
        partition_features(f, cuts, Partition(start=cuts[2].name, end=cuts[1].name))
    assert e.value.field == "partition.end"
    with pytest.raises(PartitionError) as e:
        partition_features(zoo_features("mobilebert"), [], Partition(end="x"))
    assert e.value.field == "partition.end" and "no cut points" in e.value.message


def test_plan_cost_is_the_sum_of_its_parts_and_the_table_agrees() -> None:
    mesh, model = _mesh(), "mobilenet_v1"
    f, cuts, cands = zoo_features(model), zoo_cut_points(model), _cands(_mesh(), model)
    gpu, dsp, cloud = (_target(cands, a) for a in ("edge/gpu/fp16@6", "edge/dsp/int8", "cloud/gpu/fp32"))
    plans = [
        Plan.split([gpu, cloud], [cuts[2].name]),
        Plan.split([dsp, gpu], [cuts[-1].name]),
        Plan.split([dsp, gpu, cloud], [cuts[1].name, cuts[3].name]),
    ]
    conds = [RuntimeConditions(co_cpu=c, rssi_wifi_dbm=r) for c in (0.0, 0.6) for r in (-50.0, -85.0)]
    table = PlanCostTable(mesh, f, cuts, plans).evaluate(
        *(np.array([getattr(c, k) for c in conds]) for k in ("co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm"))
    )
    for j, plan in enumerate(plans):
        check_plan(cuts, plan)
        for i, cond in enumerate(conds):
            pc = plan_cost(mesh, f, cuts, plan, cond)
            assert table["latency_s"][i, j] == pytest.approx(pc.latency_s, rel=1e-9)
            assert table["energy_j"][i, j] == pytest.approx(pc.energy_j, rel=1e-9)
            for part in pc.parts:  # each part as the cost model prices that much of a network there
                c = costmodel.estimate(mesh, part.features, part.part.target, cond)
                assert part.inference_s == c.inference_s and part.tx_s == c.tx_s
    # the DSP -> GPU hand-off is a copy of the boundary bytes on the phone; edge -> cloud is not
    pc = plan_cost(mesh, f, cuts, plans[1], RuntimeConditions())
    assert pc.parts[1].copy_s == pytest.approx(copy_cost(mesh.edge, cuts[-1].bytes)[0]) and pc.parts[0].copy_s == 0
    assert plan_cost(mesh, f, cuts, plans[0], RuntimeConditions()).parts[1].copy_s == 0


def test_plan_ids_round_trip_and_plans_cover_the_network_once() -> None:
    cands = _cands(_mesh(), "mobilenet_v1")
    cuts = zoo_cut_points("mobilenet_v1")
    p = Plan.split([_target(cands, "edge/cpu/int8@22"), _target(cands, "cloud/gpu/fp32")], [cuts[2].name])
    assert p.id == f"edge/cpu/int8@22|{cuts[2].name}|cloud/gpu/fp32" and p.route == "edge>cloud"
    assert Plan.parse(p.id) == p
    with pytest.raises(ValueError, match="not a plan id"):
        Plan.parse("edge/cpu/int8@22|x")
    gap = Plan(parts=(p.parts[0], p.parts[1].model_copy(update={"partition": Partition(start=cuts[3].name)})))
    with pytest.raises(PartitionError) as e:
        check_plan(cuts, gap)
    assert e.value.field == "plan.1"


# --------------------------------------------------------------------------- sub-graph files


def test_parts_cut_from_real_files_compose_to_the_whole(tmp_path: Path) -> None:
    """FP32 parts equal the whole; INT8 and FP16 variants cut at the same names, float32 boundaries."""
    store = ModelStore(tmp_path)
    data = chain_cnn().SerializeToString()
    info = store.add("chain", data)
    assert [c.name for c in info.cut_points] == ["r1", "f"]
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    for precision, tol in ((Precision.fp32, 1e-5), (Precision.fp16, 5e-2), (Precision.int8, 0.5)):
        whole = ort.InferenceSession(str(store.path("chain", precision)), providers=["CPUExecutionProvider"])
        ref = whole.run(None, {"x": x})[0]
        for cut in info.cut_points:
            a = ort.InferenceSession(
                str(store.part("chain", precision, Partition(end=cut.name))), providers=["CPUExecutionProvider"]
            )
            b = ort.InferenceSession(
                str(store.part("chain", precision, Partition(start=cut.name))), providers=["CPUExecutionProvider"]
            )
            assert [i.name for i in b.get_inputs()] == [cut.name] and b.get_inputs()[0].type == "tensor(float)"
            mid = a.run(None, {"x": x})
            assert mid[0].dtype == np.float32 and list(mid[0].shape) == cut.tensors[0].shape
            out = b.run(None, {cut.name: mid[0]})[0]
            assert float(np.abs(out - ref).max()) <= tol, (precision, cut.name)
    # cached: a second call returns the same file; an unknown cut is refused naming the field
    p = store.part("chain", Precision.fp32, Partition(end="r1"))
    assert store.part("chain", Precision.fp32, Partition(end="r1")) == p and p.parent.name == "parts"
    with pytest.raises(PartitionError) as e:
        store.part("chain", Precision.fp32, Partition(end="nope"))
    assert e.value.field == "partition.end"


# --------------------------------------------------------------------------- NeuroSurgeon


def test_neurosurgeon_regressions_predict_the_profile() -> None:
    mesh = _mesh()
    cands = _cands(mesh, "resnet50")
    f, cuts = zoo_features("resnet50"), zoo_cut_points("resnet50")
    for action in ("edge/gpu/fp32@6", "cloud/gpu/fp32"):
        t = _target(cands, action)
        model = fit_layer_model(mesh.profile_for(t.runner), t, NeuroSurgeonParams(seed=1))
        for a, b in ((0, 1), (1, len(cuts) + 1), (0, len(cuts) + 1)):
            part = Partition(
                start=None if a == 0 else cuts[a - 1].name, end=None if b > len(cuts) else cuts[b - 1].name
            )
            truth = costmodel.inference_time(
                mesh.profile_for(t.runner), partition_features(f, cuts, part), t, RuntimeConditions()
            )
            pred, _ = model.predict(counts_between(f, cuts, a, b))
            assert pred == pytest.approx(truth, rel=0.15), (action, a, b)


def _ctx(
    model: str, cands: tuple[Candidate, ...], cond: RuntimeConditions, accuracy_min: float | None = None
) -> DecisionContext:
    f = zoo_features(model)
    index = state_index(f, cond)
    return DecisionContext(model, f, cond, index, cands, qos_s(f), accuracy_min, cuts=zoo_cut_points(model))


def test_neurosurgeon_splits_by_bandwidth_in_both_modes() -> None:
    mesh = _mesh()
    cands = _cands(mesh, "mobilenet_v2")
    energy = make_policy("neurosurgeon", mesh=mesh, seed=0)
    latency = make_policy("neurosurgeon-latency", mesh=mesh, seed=0)
    assert isinstance(energy, NeuroSurgeonPolicy) and isinstance(latency, NeuroSurgeonPolicy)
    seen = set()
    for rssi in (-40.0, -60.0, -75.0, -85.0, -90.0):
        ctx = _ctx("mobilenet_v2", cands, RuntimeConditions(rssi_wifi_dbm=rssi))
        phone, server = _target(cands, "edge/gpu/fp32@6"), _target(cands, "cloud/gpu/fp32")
        options = energy.splits(ctx, phone, server)
        ok = [s for s in options if s.latency_s < ctx.qos_s]
        best = min(ok, key=lambda s: s.energy_j) if ok else min(options, key=lambda s: s.latency_s)
        d = energy.decide(ctx, random.Random(0))
        n = len(ctx.cuts) + 1
        expect = (
            server.id
            if best.cut == 0
            else phone.id
            if best.cut == n
            else f"{phone.id}|{ctx.cuts[best.cut - 1].name}|{server.id}"
        )
        assert d.action_id == expect
        fastest = min(latency.splits(ctx, phone, server), key=lambda s: s.latency_s)
        assert latency.decide(ctx, random.Random(0)).action_id.count("|") == (0 if fastest.cut in (0, n) else 2)
        seen.add(d.action_id)
    # a strong signal sends the small late tensor to the cloud; a weak one keeps it all on the phone
    assert any("|" in a for a in seen) and "edge/gpu/fp32@6" in seen
    assert energy.plan_space(zoo_cut_points("mobilenet_v2"), cands)  # one plan per cut: the simulator's columns


# --------------------------------------------------------------------------- MOSAIC


def _assignment_cost(
    mesh: Mesh, f: ModelFeatures, cuts: list[CutPoint], options: list[Target], assign: tuple[int, ...]
) -> tuple[float, float]:
    """(latency, phone energy) of running slice s on ``options[assign[s]]``, consecutive equal slices as one part."""
    bounds: list[str | None] = [None, *(c.name for c in cuts), None]
    targets, ends = [options[assign[0]]], []
    for s in range(1, len(assign)):
        if assign[s] != assign[s - 1]:
            targets.append(options[assign[s]])
            ends.append(bounds[s])
    if len(targets) == 1:
        c = costmodel.estimate(mesh, f, targets[0], RuntimeConditions())
        return c.latency_s, c.energy_j
    pc = plan_cost(mesh, f, cuts, Plan.split(targets, [e for e in ends if e]), RuntimeConditions())
    return pc.latency_s, pc.energy_j


def test_mosaic_program_is_the_best_assignment() -> None:
    """The dynamic program equals brute force over every assignment of slices to processors."""
    mesh = _mesh("moto_x_force")
    for model in ("mobilenet_v1", "inception_v1"):
        f, cuts, cands = zoo_features(model), zoo_cut_points(model), _cands(mesh, model)
        options = [c.target for c in phone_options(cands, None)]
        picks = slice_program(mesh, f, cuts, options)
        assert picks is not None
        every = itertools.product(range(len(options)), repeat=len(cuts) + 1)
        best = min(_assignment_cost(mesh, f, cuts, options, a) for a in every)
        assert _assignment_cost(mesh, f, cuts, options, tuple(picks)) == pytest.approx(best, rel=1e-9)
    # MOSAIC's choice on the Moto X Force slices convolutions onto the GPU and the classifier onto the CPU
    ctx = _ctx("mobilenet_v1", _cands(mesh, "mobilenet_v1"), RuntimeConditions())
    d = make_policy("mosaic", mesh=mesh).decide(ctx, random.Random(0))
    assert d.plan is not None and [p.target.processor.value for p in d.plan.parts] == ["gpu", "cpu"]


def test_mosaic_respects_the_accuracy_floor_and_is_static() -> None:
    mesh = _mesh()
    cands = _cands(mesh, "mobilenet_v1")
    p = make_policy("mosaic", mesh=mesh)
    fp32_floor = max(c.accuracy for c in cands)
    ctx = _ctx("mobilenet_v1", cands, RuntimeConditions(co_cpu=0.9), accuracy_min=fp32_floor)
    d = p.decide(ctx, random.Random(0))
    used = [d.target] if d.plan is None else [x.target for x in d.plan.parts]
    assert all(t.precision != Precision.int8 and t.runner == Location.edge for t in used)  # INT8: 65.7 < 70.9
    assert p.decide(
        _ctx("mobilenet_v1", cands, RuntimeConditions(co_cpu=0.9, rssi_wifi_dbm=-90)), random.Random(1)
    ) == p.decide(
        _ctx("mobilenet_v1", cands, RuntimeConditions()), random.Random(2)
    )  # decided from the profile: the conditions change nothing


# --------------------------------------------------------------------------- AutoScale's split actions


def test_split_actions_win_somewhere_and_are_few() -> None:
    mesh = _mesh("moto_x_force")
    for model in ("mobilenet_v2", "mobilenet_v3", "resnet50"):
        f, cuts, cands = zoo_features(model), zoo_cut_points(model), _cands(mesh, model)
        q = qos_s(f)
        splits = split_candidates(mesh, f, cuts, cands, q, per_location=1)
        assert len(splits) <= 2 and len({c.plan.parts[1].target.runner for c in splits if c.plan}) == len(splits)
        for c in splits:
            assert c.plan is not None and c.action_id == c.plan.id
            loc = c.plan.parts[1].target.runner
            won = False
            radio = mesh.edge.radio
            assert radio is not None and radio.p2p is not None
            link = radio.wifi if loc == Location.cloud else radio.p2p
            for point, co in itertools.product(link.points, (0.0, 0.5)):
                kw = {"rssi_wifi_dbm": point.rssi_dbm} if loc == Location.cloud else {"rssi_p2p_dbm": point.rssi_dbm}
                cond = RuntimeConditions(co_cpu=co, **kw)
                whole = [costmodel.estimate(mesh, f, w.target, cond) for w in cands]
                best = min((w.energy_j for w in whole if w.latency_s < q), default=math.inf)
                pc = plan_cost(mesh, f, cuts, c.plan, cond)
                won |= pc.latency_s < q and pc.energy_j < best
            assert won, c.action_id
    assert split_candidates(mesh, zoo_features("mobilebert"), [], _cands(mesh, "mobilebert"), 0.1) == []


def test_cut_point_wire_model_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CutPoint.model_validate({"name": "x", "tensors": [], "bytes": 0, "before": {}, "after": {}})


def test_the_fallback_target_of_a_plan() -> None:
    """The rest of a plan runs on the previous part's target if its runner lives, else edge, cloud,
    peer in that order (FP32, top DVFS step first); nothing when every runner has failed."""
    from services.decider.plans import fallback_target

    cands = _cands(_mesh(), "mobilenet_v1")
    cpu, cloud = _target(cands, "edge/cpu/int8@22"), _target(cands, "cloud/gpu/fp32")
    plan = Plan.split([cpu, cloud], [zoo_cut_points("mobilenet_v1")[2].name])
    fb = fallback_target(cands, plan.parts[0], {Location.cloud})
    assert fb is not None and fb.target.id == "edge/cpu/int8@22"  # the tensors are on the phone already
    fb = fallback_target(cands, None, {Location.edge})
    assert fb is not None and fb.target.runner == Location.cloud and fb.target.precision == Precision.fp32
    fb = fallback_target(cands, plan.parts[0], {Location.edge, Location.cloud})
    assert fb is not None and fb.target.runner == Location.peer
    fb = fallback_target(cands, None, set())
    assert fb is not None and fb.target.id == "edge/cpu/fp32@22"
    assert fallback_target(cands, plan.parts[0], {Location.edge, Location.cloud, Location.peer}) is None
