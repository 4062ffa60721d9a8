"""Bulk operations on a device's table in Redis: export, import, reset, transfer, policy view.

Each validates fully first, then writes in one MULTI/EXEC (``PUT_ROW_LUA`` per row, packing the
entries into the device's layout) that ends with ``BUMP_LUA`` (one new version for every touched
state and one "reload" message), and reloads this process's cache before it returns (``reload``);
other processes follow the message. Q values are stored as float32 and visit counts saturate at
``VISITS_MAX``: an export shows what the packed table holds. The learned corrections are not part
of the export format (they describe this device's profile): a reset clears them, an import or a
transfer keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import redis.asyncio as aioredis

from services.core.policies.qlearning import (
    PolicyView,
    QTableExport,
    QTableImportError,
    TableParams,
    ValidatedTable,
    policy_view,
    transfer_table,
    valid_device,
    validate_export,
)
from services.decider.qstore.actions import ActionSet
from services.decider.qstore.codec import Rows, as_rows, as_str, decode_table, put_row_args, queue_table_read
from services.decider.qstore.keys import BUMP_LUA, CLEAR_LUA, PUT_ROW_LUA, Keys
from services.decider.qstore.models import ImportResult, ResetResult, TransferResult


class TableAdmin:
    """Export/import/reset/transfer of the table of ``keys.device`` (and reading other
    devices' tables in the same Redis, for transfers)."""

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        actions: ActionSet,
        params: TableParams,
        *,
        reload: Callable[[], Awaitable[None]],
    ) -> None:
        self._r = r
        self.keys = keys
        self.device = keys.device
        self._actions = actions
        self.params = params
        self._reload = reload
        self._clear_script = r.register_script(CLEAR_LUA)
        self._bump_script = r.register_script(BUMP_LUA)
        self._put_script = r.register_script(PUT_ROW_LUA)

    # ------------------------------------------------------------------ reads
    async def read_table(self, keys: Keys | None = None) -> tuple[Rows, set[str]]:
        """Every row of a device's table (default: this one) and its recorded action ids."""
        keys = keys or self.keys
        async with self._r.pipeline(transaction=True) as pipe:  # one consistent snapshot
            n = queue_table_read(pipe, keys)
            pipe.smembers(keys.actions)
            res = await pipe.execute()
        table, _ = decode_table(res[:n])
        return dict(sorted(as_rows(table).items())), {as_str(a) for a in res[n]}

    async def device_actions(self, device: str) -> set[str]:
        if device == self.device:
            return set(self._actions.known) | {as_str(a) for a in await self._r.smembers(self.keys.actions)}
        return {as_str(a) for a in await self._r.smembers(Keys(device).actions)}

    async def export(self, keys: Keys | None = None) -> QTableExport:
        """A whole table (default: this device's), from Redis (authoritative)."""
        keys = keys or self.keys
        states, acts = await self.read_table(keys)
        if keys.device == self.device:
            acts |= self._actions.known
        for row in states.values():
            acts.update(row)
        table = ValidatedTable(device=keys.device, actions=tuple(sorted(acts)), states=states)
        return QTableExport.model_validate(
            {
                **table.to_export(),
                "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "params": self.params,
            }
        )

    async def policy_view(self) -> PolicyView:
        states, _ = await self.read_table()
        return policy_view(self.device, states)

    async def memory_usage(self) -> tuple[int, int, int]:
        """(bytes of every key of the namespace, bytes of the table proper, number of keys)."""
        k = self.keys
        keys = [key async for key in self._r.scan_iter(match=f"{k.prefix}:*", count=1000)]
        mem = table_mem = 0
        for i in range(0, len(keys), 512):
            chunk = keys[i : i + 512]
            async with self._r.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.memory_usage(key, samples=0)
                usage = await pipe.execute()
            for key, m in zip(chunk, usage, strict=True):
                mem += int(m or 0)
                if k.holds_table_data(as_str(key)):
                    table_mem += int(m or 0)
        return mem, table_mem, len(keys)

    # ------------------------------------------------------------------ writes
    async def import_(self, data: object, mode: str = "replace") -> ImportResult:
        """Load an export. ``replace`` swaps the whole table; ``merge`` overwrites only the
        entries present in ``data``. Malformed or mismatched input raises ``QTableImportError``
        naming the field, before anything is written."""
        if mode not in ("replace", "merge"):
            raise QTableImportError("mode", "must be 'replace' or 'merge'")
        how: Literal["replace", "merge"] = "replace" if mode == "replace" else "merge"
        known = await self.device_actions(self.device)
        table = validate_export(data, expect_device=self.device, allowed_actions=known or None)
        version = await self._write_table(self.keys, table, how)
        self._actions.known.update(table.actions)
        await self._actions.sync(self._r, self.keys)
        await self._reload()
        return ImportResult(
            device=self.device, mode=how, states=len(table.states), entries=table.entries, version=version
        )

    async def _write_table(self, keys: Keys, table: ValidatedTable, mode: str) -> int:
        async with self._r.pipeline(transaction=True) as pipe:
            if mode == "replace":  # the rows only: the learned corrections stay
                await self._clear_script(keys=[keys.vers, keys.corr], args=[keys.prefix, "0"], client=pipe)
            for s, row in sorted(table.states.items()):
                ks, args = put_row_args(keys, s, row)
                await self._put_script(keys=ks, args=args, client=pipe)
            if table.actions:
                pipe.sadd(keys.actions, *table.actions)
            await self._bump_script(
                keys=[keys.vers, keys.version], args=[keys.channel, *sorted(table.states)], client=pipe
            )
            res = await pipe.execute()
        return int(res[-1])

    async def reset(self) -> ResetResult:
        """Forget everything learned on this device, corrections included (the action set is kept)."""
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            # The applied-sequence hash stays: the writers' gap check must not read a reset as
            # lost updates (and replay them into the cleared table).
            await self._clear_script(keys=[k.vers, k.corr], args=[k.prefix, "1"], client=pipe)
            await self._bump_script(keys=[k.vers, k.version], args=[k.channel], client=pipe)
            res = await pipe.execute()
        await self._reload()
        return ResetResult(device=self.device, states_cleared=int(res[0]), version=int(res[-1]))

    async def transfer(
        self, source: str | Mapping[str, Any] | QTableExport, to_device: str | None = None
    ) -> TransferResult:
        """The paper's transfer learning (Sec. VI-C): initialise ``to_device``'s table (default:
        this store's device) from another device's table -- a device name whose namespace is in
        this Redis, or an export. Only the destination's actions are kept, same-kind actions are
        mapped (see ``qlearning.transfer_mapping``), and the destination table is replaced."""
        dest = to_device or self.device
        if not valid_device(dest):
            raise QTableImportError("to_device", f"invalid device name {dest!r}")
        if isinstance(source, str):
            if not valid_device(source):
                raise QTableImportError("from_device", f"invalid device name {source!r}")
            src_data = await self.export(Keys(source))
            if not src_data.states:
                raise QTableImportError("from_device", f"device {source!r} has no Q table in this store", "mismatch")
            src = validate_export(src_data.model_dump())
        elif isinstance(source, QTableExport):
            src = validate_export(source.model_dump())
        elif isinstance(source, Mapping):
            src = validate_export(dict(source))
        else:
            raise QTableImportError("from_device", "give a device name or an export object")
        if src.device == dest:
            raise QTableImportError("from_device", f"source and destination are both {dest!r}", "mismatch")
        dest_actions = sorted(await self.device_actions(dest))
        if not dest_actions:
            raise QTableImportError(
                "to_device", f"actions of device {dest!r} are unknown (it has not served a request yet)", "mismatch"
            )
        table, report = transfer_table(src, dest, dest_actions)
        version = await self._write_table(Keys(dest), table, "replace")
        if dest == self.device:
            await self._reload()
        return TransferResult(**report.model_dump(), version=version)
