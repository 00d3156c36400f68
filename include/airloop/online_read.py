"""A reader of Feast's Redis online store for the scoring service: the keys and fields ``online_write`` writes
(Feast 0.67's layout), one pipelined HMGET per entity, ``Value`` and ``_ts`` decoded with protobuf (upb).

It returns what ``FeatureStore.get_online_features(...).to_dict(include_event_timestamps=True)`` returns for
the same entity ids (``tests/test_serve_fast_paths.py`` compares the two on data the pipeline wrote): the join key,
each feature's value (``None`` where missing) and ``<name>__ts``, the event time in whole seconds (0 when the
entity has no row; 0 for the join key). Feast builds a response protobuf and converts it back, ~9 ms for 100
entities; this builds the dict directly.

As in Feast 0.67's ``get_online_features``, a value older than the feature view's TTL is returned: the TTL
bounds what materialization reads, not what an online read returns (only Feast's precomputed-vector path
marks OUTSIDE_MAX_AGE). It covers what ``online_write``'s guard covers, for a feature service of one view
with a Redis online store; ``redis_reader`` says why not otherwise, and the service reads through Feast.
"""

from __future__ import annotations

import calendar
import struct
from datetime import UTC, datetime
from typing import Any

from airloop.online_write import Layout, entity_keys, store_layout

DECODED_CACHE = 65_536  # distinct non-double Value records kept decoded (counts, categories): cleared when full


class RedisReader:
    """Latest values of one feature view's features for a list of entity ids, straight from Redis."""

    def __init__(self, client: Any, layout: Layout, features: list[str]) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        self.client, self.layout, self.features = client, layout, list(features)
        fields = [_mmh3(f"{layout.view}:{name}") for name in self.features] + [f"_ts:{layout.view}".encode()]
        self._head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)  # HMGET, key, fields
        self._fields = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
        self._suffix = layout.project.encode()
        self._decoded: dict[bytes, Any] = {}

    def read(self, ids: list[Any]) -> dict[str, list]:
        """The ``to_dict(include_event_timestamps=True)`` of Feast's online response for ``ids``."""
        import pyarrow as pa
        from google.protobuf.timestamp_pb2 import Timestamp

        key_type = pa.int64() if self.layout.key_type == "int" else pa.string()
        _, keys = entity_keys(pa.array(ids, key_type), self.layout, self._suffix)
        replies = self._hmget(keys)
        k = len(self.features)
        columns: list[list] = [[None] * len(ids) for _ in range(k)]
        stamps = [0] * len(ids)
        for i, reply in enumerate(replies):
            for j in range(k):
                if raw := reply[j]:
                    columns[j][i] = self._value(raw)
            if reply[k]:
                ts = Timestamp.FromString(reply[k])
                # Feast: datetime.fromtimestamp(seconds + nanos / 1e9) into a Timestamp, then its seconds
                stamps[i] = ts.seconds if not ts.nanos else _whole_seconds(ts.seconds + ts.nanos / 1e9)
        out: dict[str, list] = {self.layout.join_key: list(ids), f"{self.layout.join_key}__ts": [0] * len(ids)}
        for name, column in zip(self.features, columns, strict=True):
            out[name] = column
            out[f"{name}__ts"] = stamps
        return out

    def _value(self, raw: bytes) -> Any:
        """A serialized ``Value`` as Feast's ``feast_value_type_to_python_type`` gives it."""
        if len(raw) == 9 and raw[0] == 0x29:  # double_val (field 5, fixed64): most features; no parse needed
            return _DOUBLE.unpack_from(raw, 1)[0]
        value = self._decoded.get(raw, _MISSING)
        if value is _MISSING:
            from feast.protos.feast.types.Value_pb2 import Value

            parsed = Value.FromString(raw)
            kind = parsed.WhichOneof("val")
            value = None if kind is None else getattr(parsed, kind)
            if len(self._decoded) >= DECODED_CACHE:
                self._decoded.clear()
            self._decoded[raw] = value
        return value

    def _hmget(self, keys: list[bytes]) -> list[list[bytes | None]]:
        """One HMGET per key, sent as one packed write on one pooled connection; a connection Redis closed
        since (a restart) is retried once on a fresh one."""
        from redis.exceptions import ConnectionError as RedisConnectionError

        payload = b"".join(self._head + b"$%d\r\n%s\r\n" % (len(key), key) + self._fields for key in keys)
        pool = self.client.connection_pool
        for attempt in (1, 2):
            conn = pool.get_connection()
            try:
                conn.send_packed_command([payload], check_health=False)
                return [conn.read_response() for _ in keys]
            except RedisConnectionError:
                conn.disconnect()
                if attempt == 2:
                    raise
            except BaseException:
                conn.disconnect()
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")


_DOUBLE = struct.Struct("<d")
_MISSING = object()


def _whole_seconds(total: float) -> int:
    return calendar.timegm(datetime.fromtimestamp(total, tz=UTC).utctimetuple())


def redis_reader(store: Any, service: Any) -> tuple[RedisReader | None, str]:
    """The reader of feature service ``service`` in ``store``, or None and why it does not cover it."""
    if store.config.online_store.type != "redis":
        return None, f"online store type {store.config.online_store.type!r} (covered: redis)"
    projections = service.feature_view_projections
    if len(projections) != 1 or projections[0].name_alias or projections[0].join_key_map:
        return None, "the feature service has several views, an alias or a join key map (covered: one plain view)"
    layout, reasons = store_layout(store, projections[0].name)
    if layout is None:
        return None, "; ".join(reasons)
    client = store._get_provider().online_store._get_client(store.config.online_store)
    return RedisReader(client, layout, [f.name for f in projections[0].features]), ""
