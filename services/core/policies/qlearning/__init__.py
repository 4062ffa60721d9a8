"""AutoScale's Q-learning core (paper Sec. IV, Algorithm 1). Pure: no I/O.

Pieces, from the inside out (one module per seam):

* ``initial_q``: the paper initialises Q(S, A) with random values. We draw them lazily, the
  first time an action is seen in a state, from a hash of (seed, state, action): every decider
  process and the Redis script then agree on the same "random" value without coordinating.
  That is ``QParams.q_init = "random"`` (the paper's). ``"nearest"`` instead seeds a missing
  entry from the nearest state, in Table I bin space, that holds a value for that action (the
  paper's transfer-learning idea, Sec. IV / VI-C, applied across states): see ``EntryIndex``
  (``entries``). ``initial_q``, ``q_learning_target``, ``QUpdate`` and the UCB ranking are in
  ``maths``; the parameters in ``params``.
* ``QParams.lr_schedule``: ``"constant"`` is Algorithm 1's fixed learning rate (0.9, Sec. V-C);
  ``"visits"`` uses 1 / (n + 1) for the (n + 1)-th update of an entry, floored at
  ``lr_floor`` (a sample average that forgets slowly), which averages out measurement noise.
* ``candidates.eligible_indices`` / ``epsilon_greedy`` (shared by every policy): the action
  choice. Accuracy masking (our default, switchable) never picks a target below
  ``accuracy_min``; with it off we have the paper's penalty-only behaviour, where eq. 5's
  ``R_accuracy - 100`` teaches the table to avoid them.
  Beyond the paper, while exploring (epsilon > 0): ``explore_untried`` tries every action of a
  state once before retrying any (most promising initial value first) and ``explore_bonus`` adds
  a UCB-style bonus that decays with an entry's visits; exploitation (epsilon 0) ranks Q alone.
  ``QParams.paper()`` is Algorithm 1 as published (the dataclass defaults); ``QParams.improved()``
  switches every option on (what ``services.evaluation`` reports as "autoscale").
* ``q_learning_target``: Q(S,A) <- Q + lr [R + discount * max_a' Q(S',a') - Q]. The Redis Lua
  script in ``services.decider.qstore`` evaluates exactly this expression in the same order,
  so an in-memory table and the Redis table produce bit-identical values.
* ``table``: ``RowCache``, the rows/visits/entry index/write counter every table keeps and the
  one implementation of how they change; ``QTable``, the in-memory table (simulator, tests);
  ``RowSource``, the table interface. ``policy``: ``QLearningPolicy``, which reads rows from any
  ``RowSource`` (``QTable`` or the Redis-backed ``QStore``, itself a ``RowCache``).
* ``export`` (format, strict validation, ``QTableImportError``), ``transfer`` (the cross-device
  mapping) and ``models`` (typed results), shared by both tables; ``replay`` (``Replayer``):
  train a ``QTable`` offline from the decider's decision log (``services.core.decision_log``).

A row covers exactly the currently available actions: the stored table keeps values of
actions that disappeared (a runner that restarts must not lose what was learned), but argmax
and the max over S' only ever look at the actions offered now, and an action that appears is
given its initial value on first sight.

Consistency rule for initial values (every process, and the Redis script, must agree on what a
*missing* entry is worth when it is first written): the value a process uses for a missing
entry travels inside the ``QUpdate`` (``init`` for Q(S,A), ``next_inits`` for the S' row), and
the script applies the update to that value only when the field is absent. ``"random"`` values
are a pure function of (seed, state, action), so every process computes the same one.
``"nearest"`` values are read from the caller's cache of the table; two processes whose caches
momentarily differ (an update still in flight on the pub/sub channel) may propose different
values for the same missing field, and whichever update reaches Redis first materialises it --
from then on every process reads the stored value. An initial value is only a prior that
orders exploration; the first update replaces it (entirely with ``lr_schedule="visits"``).
"""

from services.core.policies.qlearning.corrections import (
    CorrectionObs,
    Corrections,
    FamilyStats,
    correction_step,
    model_key,
)
from services.core.policies.qlearning.entries import EntryIndex
from services.core.policies.qlearning.export import (
    EXPORT_FORMAT_VERSION,
    QTableImportError,
    ValidatedTable,
    policy_view,
    valid_device,
    validate_export,
)
from services.core.policies.qlearning.maths import (
    VISITS_MAX,
    QUpdate,
    apply_update,
    f32,
    initial_q,
    q_learning_target,
    ucb_argmax,
    ucb_score,
)
from services.core.policies.qlearning.models import (
    PolicyView,
    QEntry,
    QTableExport,
    StatePolicy,
    TableCounts,
    TableParams,
    TransferReport,
)
from services.core.policies.qlearning.params import LR_SCHEDULES, Q_INITS, QParams, QSettings
from services.core.policies.qlearning.policy import QLearningPolicy
from services.core.policies.qlearning.replay import Replayer, ReplaySummary
from services.core.policies.qlearning.table import QTable, RowCache, RowSource
from services.core.policies.qlearning.transfer import transfer_mapping, transfer_table

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "LR_SCHEDULES",
    "Q_INITS",
    "VISITS_MAX",
    "CorrectionObs",
    "Corrections",
    "EntryIndex",
    "FamilyStats",
    "PolicyView",
    "QEntry",
    "QLearningPolicy",
    "QParams",
    "QSettings",
    "QTable",
    "QTableExport",
    "QTableImportError",
    "QUpdate",
    "ReplaySummary",
    "Replayer",
    "RowCache",
    "RowSource",
    "StatePolicy",
    "TableCounts",
    "TableParams",
    "TransferReport",
    "ValidatedTable",
    "apply_update",
    "correction_step",
    "f32",
    "initial_q",
    "model_key",
    "policy_view",
    "q_learning_target",
    "transfer_mapping",
    "transfer_table",
    "ucb_argmax",
    "ucb_score",
    "valid_device",
    "validate_export",
]
