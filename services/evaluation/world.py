"""One device's simulated world: the networks' features, their cases and the random blocks every
experiment replays, deterministic from the seed and cached per process."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.common.accuracy import expected_accuracy
from services.common.config_files import load_profile, load_scenario
from services.core.costmodel import Mesh
from services.core.scenarios import Scenario, qos_s
from services.core.schemas import ModelFeatures, Precision
from services.evaluation.config import EvalConfig
from services.evaluation.simulator import Block, ModelCase, make_block, model_case
from services.evaluation.truth import TrueWorld

_FEATURES: dict[str, ModelFeatures] = {}  # extracted once in the parent, handed to the workers


def zoo_models(names: Sequence[str] | None) -> dict[str, ModelFeatures]:
    """The features of the named zoo networks (all ten when None), extracted once per process."""
    from services.common.zoo import ZOO_NAMES, zoo_features

    chosen = list(names) if names else list(ZOO_NAMES)
    unknown = [n for n in chosen if n not in ZOO_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; the zoo has {list(ZOO_NAMES)}")
    for n in chosen:
        if n not in _FEATURES:
            _FEATURES[n] = zoo_features(n)  # graph walk, ~0.1-0.5 s per network
    return {n: _FEATURES[n] for n in chosen}


def known_features() -> dict[str, ModelFeatures]:
    """A copy of what this process has extracted (handed to the worker processes)."""
    return dict(_FEATURES)


def preload_features(features: dict[str, ModelFeatures]) -> None:
    """Adopt features extracted by another process (a worker's initialiser)."""
    _FEATURES.update(features)


def accuracy_of(model: str, precision: Precision) -> float | None:
    """Expected accuracy of a network at a precision (None: not offered at that precision)."""
    entry = expected_accuracy(model, precision)
    return None if entry is None else float(entry.top1)


def seed_of(*parts: object) -> int:
    """A stable seed for a named random stream (CRC-32 of the parts)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass
class DeviceWorld:
    """Everything one device's experiments replay: cases and blocks, deterministic from the seed."""

    cfg: EvalConfig
    device: str
    mesh: Mesh  # the profiles: what the decider knows, and all a policy may be given
    scenarios: dict[str, Scenario]
    features: dict[str, ModelFeatures]
    truth: TrueWorld  # the hidden deviations of the real devices from ``mesh`` (never a policy's)
    cases: dict[tuple[str, float | None], ModelCase] = field(default_factory=dict)
    blocks: dict[tuple[str, str, str, float | None], Block] = field(default_factory=dict)

    def case(self, model: str, accuracy_min: float | None = None) -> ModelCase:
        key = (model, accuracy_min)
        if key not in self.cases:
            f = self.features[model]
            self.cases[key] = model_case(self.mesh, model, f, accuracy_of, qos_s(f, self.cfg.streaming), accuracy_min)
        return self.cases[key]

    def block(self, model: str, scenario: str, phase: str, n: int, accuracy_min: float | None = None) -> Block:
        """``phase`` names an independent random stream (train / test / conv)."""
        key = (model, scenario, phase, accuracy_min)
        b = self.blocks.get(key)
        if b is None or b.n < n:
            # Conditions and noise do not depend on accuracy_min: same stream for every target.
            rng = np.random.default_rng(seed_of(self.cfg.seed, self.device, model, scenario, phase))
            b = make_block(
                self.case(model, accuracy_min), self.scenarios[scenario], n, rng, self.cfg.noise_sigma, truth=self.truth
            )
            self.blocks[key] = b
        return b


def load_device(cfg: EvalConfig, device: str) -> DeviceWorld:
    edge = load_profile(device, cfg.profiles_dir)
    if edge.kind != "phone":
        raise ValueError(f"{device} is a {edge.kind} profile; the decider serves a phone")
    mesh = Mesh(
        edge=edge, peer=load_profile(cfg.peer, cfg.profiles_dir), cloud=load_profile(cfg.cloud, cfg.profiles_dir)
    )
    scen = {s: load_scenario(s, cfg.scenarios_dir) for s in cfg.scenarios}
    truth = TrueWorld(mesh, world_seed(cfg.seed), cfg.world_sigma, cfg.estimator_sigma if cfg.world_sigma > 0 else 0.0)
    return DeviceWorld(cfg, edge.name, mesh, {v.name: v for v in scen.values()}, zoo_models(cfg.models), truth)


def world_seed(seed: int) -> int:
    """The seed of the hidden deviations, derived from the run's seed (one world per seed)."""
    return seed_of("true-world", seed)


_WORLDS: dict[tuple[str, str], DeviceWorld] = {}


def world_of(cfg: EvalConfig, device: str) -> DeviceWorld:
    """The process-wide cache of worlds (blocks are reused by every fold of a device)."""
    cfg_key = repr(cfg.to_json())
    if any(k[0] != cfg_key for k in _WORLDS):
        _WORLDS.clear()  # one configuration at a time per process
    key = (cfg_key, device)
    w = _WORLDS.get(key)
    if w is None:
        w = _WORLDS[key] = load_device(cfg, device)
    return w
