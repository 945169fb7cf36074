"""The node's storage: SQLite (WAL) through SQLAlchemy, plus a weights store.

Tables
  blocks      one row per block header seen: status, reason, cumulative work,
              measured accuracy, arrival time and peer, first-seen sequence.
  best_chain  height -> hash of the active chain; rewritten in one transaction
              on every tip change (a reorg is atomic).
  meta        key/value (the tip).

Post-states (W' of each validated block) live beside the database,
content-addressed by weights hash, written atomically (temp file, fsync, rename),
so a crash never leaves a half file under a real name. A block row is committed
only after its post-state is on disk.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import (BigInteger, Integer, String, Text, and_, create_engine, delete, event, exists, func,
                        or_, select)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column

from consensus.block import BlockHeader
from consensus.errors import BlockStatus

VALID, INVALID, HEADER_ONLY = BlockStatus.VALID, BlockStatus.INVALID, BlockStatus.HEADER_ONLY


class Base(DeclarativeBase):
    pass


class BlockRow(Base):
    __tablename__ = "blocks"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent: Mapped[str] = mapped_column(String(64), index=True)
    height: Mapped[int] = mapped_column(Integer, index=True)
    header_json: Mapped[str] = mapped_column(Text)
    records_json: Mapped[str] = mapped_column(Text, default="[]")
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    cumulative_work: Mapped[int] = mapped_column(BigInteger)
    acc_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    acc_after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    received_at: Mapped[float] = mapped_column()
    peer: Mapped[str | None] = mapped_column(String(256), nullable=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)


class BestChainRow(Base):
    __tablename__ = "best_chain"
    height: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))


class CertificateRow(Base):
    """Model certificates carried by valid blocks (any branch; queries join best_chain)."""
    __tablename__ = "certificates"
    record_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    block_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    height: Mapped[int] = mapped_column(Integer)
    model_hash: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(64))
    record_json: Mapped[str] = mapped_column(Text)


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class StoredBlock:
    header: BlockHeader
    records: list
    status: str
    reason: str | None
    detail: str | None
    cumulative_work: int
    acc_before: int | None
    acc_after: int | None
    received_at: float
    peer: str | None
    seq: int

    @property
    def hash(self) -> str:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height


def _to_stored(row: BlockRow) -> StoredBlock:
    return StoredBlock(BlockHeader.from_json(row.header_json), json.loads(row.records_json), row.status,
                       row.reason, row.detail, int(row.cumulative_work), row.acc_before, row.acc_after,
                       row.received_at, row.peer, row.seq)


def _new_row(header: BlockHeader, peer: str | None, seq: int, now: float, status: str, cumulative_work: int):
    return BlockRow(hash=header.hash, parent=header.parent, height=header.height,
                    header_json=json.dumps(header.to_dict(), sort_keys=True), records_json="[]", status=status,
                    cumulative_work=cumulative_work, received_at=now, peer=peer, seq=seq)


class WeightsStore:
    """Content-addressed safetensors files: <root>/<h[:2]>/<h>.safetensors."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, weights_hash: str) -> Path:
        return self.root / weights_hash[:2] / f"{weights_hash}.safetensors"

    def has(self, weights_hash: str) -> bool:
        return self.path(weights_hash).exists()

    def put(self, weights_hash: str, data: bytes) -> None:
        final = self.path(weights_hash)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            dfd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, weights_hash: str) -> bytes | None:
        try:
            return self.path(weights_hash).read_bytes()
        except FileNotFoundError:
            return None

    def probe(self, where: Path | None = None, size: int = 4096) -> None:
        """Write ``size`` bytes to a temp file in ``where`` (a shard directory of post-states; the root
        when None), sync and remove it: OSError when the disk refuses what a post-state would need."""
        where = Path(where) if where is not None else self.root
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-probe-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                block = b"\0" * 65536
                left = size
                while left > 0:
                    left -= f.write(block[:left])
                f.flush()
                os.fsync(f.fileno())
        finally:
            Path(tmp).unlink(missing_ok=True)

    def delete(self, weights_hash: str) -> None:
        self.path(weights_hash).unlink(missing_ok=True)

    def all_hashes(self) -> Iterator[str]:
        for p in self.root.glob("*/*.safetensors"):
            yield p.stem

    def clean_temp(self) -> int:
        n = 0
        for p in [*self.root.glob("*/.tmp-*.part"), *self.root.glob(".tmp-probe-*.part")]:
            p.unlink(missing_ok=True)
            n += 1
        return n


class Store:
    def __init__(self, datadir: Path):
        self.datadir = Path(datadir)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.weights = WeightsStore(self.datadir / "weights")
        self.engine = create_engine(f"sqlite:///{self.datadir / 'chain.sqlite'}",
                                    connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self.write_lock = threading.RLock()

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- integrity ------------------------------------------------------------
    def integrity_problem(self) -> str | None:
        with self.engine.connect() as c:
            res = c.exec_driver_sql("PRAGMA quick_check").fetchall()
        if [r[0] for r in res] != ["ok"]:
            return "; ".join(str(r[0]) for r in res[:5])
        return None

    # -- reads -------------------------------------------------------------------
    def get(self, block_hash: str) -> StoredBlock | None:
        with self.session() as s:
            row = s.get(BlockRow, block_hash)
            return _to_stored(row) if row else None

    def raw_chain_id(self, block_hash: str) -> str | None:
        """The chain id in a stored header, read without parsing it as this version's header
        (a datadir of another protocol version must be named, not crash the parser)."""
        with self.session() as s:
            raw = s.scalar(select(BlockRow.header_json).where(BlockRow.hash == block_hash))
        try:
            return json.loads(raw).get("chain_id") if raw else None
        except (ValueError, AttributeError):
            return None

    def status(self, block_hash: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(BlockRow.status).where(BlockRow.hash == block_hash))

    def statuses(self, hashes: list[str]) -> dict[str, str]:
        """The status of each stored block among ``hashes`` (unknown ones are absent)."""
        with self.session() as s:
            return dict(s.execute(select(BlockRow.hash, BlockRow.status).where(BlockRow.hash.in_(hashes))).all())

    def tip_hash(self) -> str | None:
        with self.session() as s:
            row = s.get(MetaRow, "tip")
            return row.value if row else None

    def tip(self) -> StoredBlock | None:
        h = self.tip_hash()
        return self.get(h) if h else None

    def hash_at(self, height: int) -> str | None:
        with self.session() as s:
            return s.scalar(select(BestChainRow.hash).where(BestChainRow.height == height))

    def hashes_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Stored block hashes that start with ``prefix`` (lowercase hex), at most ``limit``, in order
        (a range scan of the primary key)."""
        with self.session() as s:
            return list(s.scalars(select(BlockRow.hash).where(BlockRow.hash >= prefix, BlockRow.hash < prefix + "g")
                                  .order_by(BlockRow.hash).limit(limit)))

    def best_range(self, start: int, limit: int) -> list[StoredBlock]:
        with self.session() as s:
            rows = s.execute(select(BlockRow).join(BestChainRow, BestChainRow.hash == BlockRow.hash)
                             .where(BestChainRow.height >= start).order_by(BestChainRow.height)
                             .limit(limit)).scalars().all()
            return [_to_stored(r) for r in rows]

    def best_hashes(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(BestChainRow.hash).order_by(BestChainRow.height)))

    def leaves(self, limit: int | None = None) -> list[StoredBlock]:
        """The chain tips, most work first: valid blocks without a valid child, header-only
        blocks without a valid or header-only child, invalid blocks without any child.

        (A tip with only invalid or header-only children is still a tip of its kind: the
        active tip stays listed when someone sends a bad block on top of it.)
        """
        child = aliased(BlockRow)

        def no_child(statuses: tuple[str, ...] | None):
            q = select(child.hash).where(child.parent == BlockRow.hash)
            if statuses:
                q = q.where(child.status.in_(statuses))
            return ~exists(q)

        cond = or_(and_(BlockRow.status == VALID, no_child((VALID,))),
                   and_(BlockRow.status == HEADER_ONLY, no_child((VALID, HEADER_ONLY))),
                   and_(BlockRow.status == INVALID, no_child(None)))
        with self.session() as s:
            q = select(BlockRow).where(cond).order_by(BlockRow.cumulative_work.desc(), BlockRow.seq)
            if limit is not None:
                q = q.limit(limit)
            return [_to_stored(r) for r in s.scalars(q).all()]

    def best_candidate(self) -> StoredBlock | None:
        """The valid block with most work; ties go to the first seen."""
        with self.session() as s:
            row = s.scalars(select(BlockRow).where(BlockRow.status == VALID)
                            .order_by(BlockRow.cumulative_work.desc(), BlockRow.seq).limit(1)).first()
            return _to_stored(row) if row else None

    def count_by_status(self) -> dict[str, int]:
        with self.session() as s:
            return dict(s.execute(select(BlockRow.status, func.count()).group_by(BlockRow.status)).all())

    # -- writes ---------------------------------------------------------------------
    def _next_seq(self, s: Session) -> int:
        return (s.scalar(select(func.max(BlockRow.seq))) or 0) + 1

    def put_block(self, header: BlockHeader, records: list, status: str, cumulative_work: int, *,
                  reason: str | None = None, detail: str | None = None, acc: tuple[int, int] | None = None,
                  peer: str | None = None) -> None:
        """Insert or update a block row (an upgrade header-only -> valid/invalid keeps its seq)."""
        with self.write_lock, self.session() as s, s.begin():
            row = s.get(BlockRow, header.hash)
            if row is None:
                row = _new_row(header, peer, self._next_seq(s), time.time(), status, cumulative_work)
                s.add(row)
            # records are kept for valid blocks only: for invalid and header-only rows they are
            # unchecked peer input (bounded by the request size alone), and nothing reads them
            row.records_json = json.dumps(records if status == VALID else [], sort_keys=True)
            row.status, row.reason, row.detail = status, reason, (detail or None)
            row.cumulative_work = cumulative_work
            if acc is not None:
                row.acc_before, row.acc_after = acc
            if status == VALID:
                self._index_certificates(s, header, records)

    def put_headers(self, items: list[tuple[BlockHeader, None, int]], peer: str | None = None) -> int:
        """Header-only rows for ``items`` [(header, None, cumulative work)] in one transaction: after a
        crash either all of them are stored or none (rows already present are left as they are).
        Returns the number of rows added."""
        if not items:
            return 0
        added, now = 0, time.time()
        with self.write_lock, self.session() as s, s.begin():
            seq = self._next_seq(s)
            have = set(s.scalars(select(BlockRow.hash).where(BlockRow.hash.in_([h.hash for h, _, _ in items]))))
            for header, _, cumulative_work in items:
                if header.hash in have:
                    continue
                have.add(header.hash)
                s.add(_new_row(header, peer, seq + added, now, HEADER_ONLY, cumulative_work))
                added += 1
        return added

    def put_assumed(self, items: list[tuple[BlockHeader, list, int]], peer: str | None = None) -> None:
        """Valid rows for ``items`` [(header, records, cumulative work)] (snapshot sync: no measured
        accuracy) in one transaction; a header-only row is upgraded in place (its seq kept)."""
        if not items:
            return
        now = time.time()
        with self.write_lock, self.session() as s, s.begin():
            seq = self._next_seq(s)
            for i, (header, records, cumulative_work) in enumerate(items):
                row = s.get(BlockRow, header.hash)
                if row is None:
                    row = _new_row(header, peer, seq + i, now, VALID, cumulative_work)
                    s.add(row)
                row.records_json = json.dumps(records, sort_keys=True)
                row.status, row.reason, row.detail, row.cumulative_work = VALID, None, None, cumulative_work
                self._index_certificates(s, header, records)

    @staticmethod
    def _index_certificates(s: Session, header: BlockHeader, records: list) -> None:
        from consensus.hashing import canonical_json, sha256_hex
        for rec in records:
            if rec.get("type") != "model-certificate":
                continue
            rid = sha256_hex(canonical_json(rec))
            if s.get(CertificateRow, (rid, header.hash)) is None:
                s.add(CertificateRow(record_id=rid, block_hash=header.hash, height=header.height,
                                     model_hash=rec["model_hash"], owner=rec["owner"],
                                     record_json=json.dumps(rec, sort_keys=True)))

    def certificates_for(self, model_hash: str) -> list[dict]:
        """Certificates for a model on the best chain, oldest first."""
        with self.session() as s:
            rows = s.execute(select(CertificateRow).join(
                BestChainRow, (BestChainRow.hash == CertificateRow.block_hash)
                & (BestChainRow.height == CertificateRow.height))
                .where(CertificateRow.model_hash == model_hash).order_by(CertificateRow.height)).scalars().all()
            return [{"record": json.loads(r.record_json), "block": r.block_hash, "height": r.height,
                     "id": r.record_id} for r in rows]

    def has_record(self, record_id: str) -> bool:
        """Whether a record is already in a block of the best chain."""
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(CertificateRow).join(
                BestChainRow, BestChainRow.hash == CertificateRow.block_hash)
                .where(CertificateRow.record_id == record_id)) > 0

    def set_tip(self, new_tip: BlockHeader, path: list[str]) -> tuple[int, int]:
        """Make ``new_tip`` the tip. ``path`` = hashes from genesis to the tip.

        Rewrites best_chain from the fork point in one transaction. Returns
        (fork height, reorg depth = blocks of the old chain disconnected).
        """
        with self.write_lock, self.session() as s, s.begin():
            old = {h: ha for h, ha in s.execute(select(BestChainRow.height, BestChainRow.hash))}
            fork = 0
            while fork < len(path) and old.get(fork) == path[fork]:
                fork += 1
            old_height = max(old) if old else -1
            depth = max(0, old_height - fork + 1)
            s.execute(delete(BestChainRow).where(BestChainRow.height >= fork))
            s.add_all(BestChainRow(height=h, hash=path[h]) for h in range(fork, len(path)))
            meta = s.get(MetaRow, "tip")
            if meta is None:
                s.add(MetaRow(key="tip", value=new_tip.hash))
            else:
                meta.value = new_tip.hash
            return fork, depth

    def mark_invalid_descendants(self, block_hash: str, reason: str) -> int:
        """Invalidity passes to every descendant."""
        n = 0
        with self.write_lock, self.session() as s, s.begin():
            todo = [block_hash]
            while todo:
                h = todo.pop()
                for row in s.scalars(select(BlockRow).where(BlockRow.parent == h)):
                    if row.status != INVALID:
                        row.status, row.reason, row.detail = INVALID, "bad-parent", f"ancestor {reason}"
                        n += 1
                    todo.append(row.hash)
        return n

    # -- pruning -------------------------------------------------------------------
    def valid_states(self, start: int, stop: int) -> list[tuple[int, str]]:
        """(height, post-state hash) of every valid block, any branch, with start <= height < stop."""
        with self.session() as s:
            rows = s.execute(select(BlockRow.height, BlockRow.header_json).where(
                BlockRow.status == VALID, BlockRow.height >= start, BlockRow.height < stop)).all()
        return [(h, json.loads(hj)["state_hash"]) for h, hj in rows]

    def count_header_only(self) -> int:
        return self.count_status(HEADER_ONLY)

    def count_status(self, status: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(BlockRow).where(BlockRow.status == status))

    def delete_oldest_invalid(self, n: int) -> int:
        """Delete the ``n`` invalid rows seen first (lowest seq) in one transaction (a crash keeps all
        or none of them). Nothing but invalid rows hangs from an invalid row, so no other row loses
        its parent's verdict. Returns the number of rows deleted."""
        if n <= 0:
            return 0
        oldest = select(BlockRow.hash).where(BlockRow.status == INVALID).order_by(BlockRow.seq).limit(n)
        with self.write_lock, self.session() as s, s.begin():
            return s.execute(delete(BlockRow).where(BlockRow.hash.in_(oldest.scalar_subquery()))
                             .execution_options(synchronize_session=False)).rowcount

    def header_only_below(self, height: int, limit: int) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(BlockRow.hash).where(BlockRow.status == HEADER_ONLY,
                                                              BlockRow.height < height).limit(limit)))

    def header_only_heavier_than(self, work: int, limit: int) -> list[StoredBlock]:
        """Header-only blocks whose claimed cumulative work exceeds ``work``, most work first."""
        with self.session() as s:
            q = (select(BlockRow).where(BlockRow.status == HEADER_ONLY, BlockRow.cumulative_work > work)
                 .order_by(BlockRow.cumulative_work.desc(), BlockRow.seq).limit(limit))
            return [_to_stored(r) for r in s.scalars(q)]

    def header_only_leaves(self, limit: int) -> list[str]:
        """Header-only rows without children, least cumulative work first (then the latest seen)."""
        child = aliased(BlockRow)
        with self.session() as s:
            return list(s.scalars(select(BlockRow.hash).where(
                BlockRow.status == HEADER_ONLY, ~exists(select(child.hash).where(child.parent == BlockRow.hash)))
                .order_by(BlockRow.cumulative_work, BlockRow.seq.desc()).limit(limit)))

    def delete_header_only(self, hashes: list[str], *, descendants: bool, up_to: int = 0) -> int:
        """Delete header-only rows in one transaction (a crash keeps all or none of them).

        ``descendants``: with every header-only row above each (nothing can link to them any more);
        else ``up_to`` > 0: from each leaf, also its header-only ancestors that have no other child,
        until ``up_to`` rows are gone in all. Returns the number of rows deleted."""
        gone: set[str] = set()
        with self.write_lock, self.session() as s, s.begin():
            for h in hashes:
                todo = [h]
                while todo and (not up_to or len(gone) < up_to):
                    x = todo.pop()
                    row = s.get(BlockRow, x)
                    if row is None or row.status != HEADER_ONLY or x in gone:
                        continue
                    kids = list(s.scalars(select(BlockRow.hash).where(BlockRow.parent == x)))
                    if descendants:
                        todo.extend(kids)
                    elif set(kids) - gone:
                        continue                      # another branch still hangs from it
                    else:
                        todo.append(row.parent)
                    gone.add(x)
                    s.delete(row)
                if up_to and len(gone) >= up_to:
                    break
        return len(gone)

    def get_meta(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(MetaRow, key)
            return row.value if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.write_lock, self.session() as s, s.begin():
            s.merge(MetaRow(key=key, value=value))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
