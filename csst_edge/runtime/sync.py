"""`csst-edge runtime sync`: upload the finished items of a harvest folder to a bucket (any fsspec URL).

    summary = sync_harvest("/data/harvest", "s3://fleet-bucket/harvest", SyncSettings(vehicle="car7"))

Remote layout, one prefix per vehicle:

    <dest>/<vehicle>/images/<sha256>.jpg      the JPEG, named by its content hash
    <dest>/<vehicle>/manifest/<sha256>.json   its harvest manifest row (+ sha256, bytes; "image" is the object's
                                              path relative to <dest>/<vehicle>/, as in a local harvest folder)
    <dest>/<vehicle>/.partial/...             uploads in flight (removed when the next sync starts)

Why a manifest object per item rather than one manifest file: object stores cannot append, and a shared JSONL
would need read-modify-write on every item (racy, and a kill between the image and the row leaves it out of
date). A row named by the same hash is written once, after its image is confirmed; rewriting it writes the same
bytes. So "the row exists" means "the item is complete remotely", a re-upload of anything is a no-op, and a
reader lists `manifest/` (`read_synced_records`).

An item is *finished* when its row is in the harvest manifest (the harvester writes the JPEG atomically and only
then appends the row) and the file has the size the row records; temp files and images without a row are never
read. Each object goes to a temporary key under `.partial/` (chunked, through the `--max-kbps` token bucket) and is
then moved to its final key, so a final key never holds a half-written object, on object stores and file systems
alike. It is confirmed by its size and its hash: the ETag where it is the object's MD5 (S3 single-part uploads
without KMS), else by reading it back. Only a confirmed item is recorded in the local state file, and only a
confirmed item is deleted locally, and only with `delete_local` (logged in the harvest manifest as an eviction
first, then deleted, as the harvester does).

Resume: the state file (`<harvest>/.sync/state-<destination id>.json`, written atomically every few seconds and at
the end) is a cache; the remote is the truth. At start the vehicle prefix is listed once, and an item whose image
and row are already there with the right size and hash is confirmed without uploading (a lost state file, or a
kill after the move but before the state write, costs a listing, not an upload). A dropped link is retried with
backoff (`retries`), then the sync stops with an error and the next run continues. Torch-free.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from csst_edge import storage
from csst_edge.errors import CsstError
from csst_edge.fileio import append_jsonl, atomic_write_json, warn
from csst_edge.runtime.harvest import MANIFEST, read_harvest_records

STATE_DIR = ".sync"
STATE_FLUSH_S = 2.0
CHUNK = 64 * 1024
# an upload in flight under .partial/ is removed by a later sync only when older than this: another machine's
# sync to the same prefix may be writing it right now
PARTIAL_MAX_AGE_S = 3600.0
LOCK_KEY = ".sync-lock.json"  # who is syncing into this vehicle prefix (a second writer from elsewhere is refused)
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory", "oss", "r2"}


class SyncError(CsstError):
    """The harvest folder, the destination or an upload failed; the message names it (credentials redacted)."""


@dataclass
class SyncSettings:
    vehicle: str | None = None  # prefix under the destination (default: the harvest's meta.json vehicle)
    delete_local: bool = False  # delete a local item once its image and row are confirmed remotely
    max_kbps: float = 0.0  # upload bandwidth cap in kilobits per second; 0 = none
    storage_options: dict = field(default_factory=dict)  # passed to fsspec (endpoint_url, key, secret, ...)
    retries: int = 3  # attempts after the first for one object before the sync stops (dropped link)
    backoff_s: float = 1.0  # first retry delay; doubles each retry


@dataclass
class SyncSummary:
    destination: str  # the vehicle prefix's URL, credentials redacted
    vehicle: str
    items: int = 0  # finished items in the harvest
    uploaded: int = 0  # items with at least one object uploaded this run
    already_remote: int = 0  # confirmed remotely without uploading (state or listing)
    deleted_local: int = 0
    skipped: int = 0  # listed in the manifest but gone or not of the recorded size (being evicted)
    bytes_uploaded: int = 0
    partials_removed: int = 0  # leftovers of an interrupted earlier upload
    verified_by: list[str] = field(default_factory=list)  # etag / read-back
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- bandwidth
class TokenBucket:
    """At most `rate` bytes per second, bursts of at most `burst` bytes after an idle spell: `consume(n)` sleeps
    until the bytes fit. It starts empty (the cap holds from the first byte), and the balance may go negative (the
    caller sleeps it off), so the chunk size does not bias the rate."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate, self.burst = float(rate), float(burst)
        self.clock, self.sleep = clock, sleep
        self.tokens = 0.0
        self.last = clock()

    def consume(self, n: int) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        if self.tokens < 0:
            self.sleep(-self.tokens / self.rate)


# ---------------------------------------------------------------------------------------------- URL display
def _display_url(url: str, storage_options: dict | None = None) -> str:
    """`url` with no credentials: no user info, no secret-looking query parameters, no storage-option secret."""
    return _scrub(storage.redact(url), storage_options)


def _secret_name(name: str) -> bool:
    return storage.is_secret_name(name.replace("-", "_"))


def _secret_values(options: dict | None) -> list[str]:
    found = []
    for k, v in (options or {}).items():
        if isinstance(v, dict):
            found += _secret_values(v)
        elif isinstance(v, str) and len(v) >= 4 and _secret_name(str(k)):
            found.append(v)
    return found


def _scrub(text: str, storage_options: dict | None) -> str:
    """Error text with any credential value of the storage options replaced by ***."""
    for secret in _secret_values(storage_options):
        text = text.replace(secret, "***")
    return text


def parse_storage_options(pairs: list[str]) -> dict:
    """`KEY=VALUE` strings into fsspec storage options: dotted keys nest (`client_kwargs.region_name=x`), a value
    that is valid JSON (numbers, true/false, {...}) is parsed, except for credential-like keys, which stay text."""
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SyncError(f"--storage-option {_scrub_pair(pair)!r} is not KEY=VALUE")
        parsed: object = value
        if not _secret_name(key.rsplit(".", 1)[-1]):
            with contextlib.suppress(ValueError):
                parsed = json.loads(value)
        node = options
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SyncError(f"--storage-option {key}: {part} is both a value and a group")
        node[leaf] = parsed
    return options


def _scrub_pair(pair: str) -> str:
    key, sep, _ = pair.partition("=")
    return f"{key}=***" if sep and _secret_name(key) else pair


# ---------------------------------------------------------------------------------------------- state
class _State:
    """Confirmed uploads of one harvest folder to one destination: name -> {sha256, md5, bytes, mtime_ns}."""

    def __init__(self, path: Path, destination: str, vehicle: str):
        self.path, self.destination, self.vehicle = path, destination, vehicle
        self.items: dict[str, dict] = {}
        self.dirty, self.flushed = False, time.monotonic()
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                self.items = dict(raw.get("items", {}))
            except (OSError, ValueError, AttributeError):
                self.items = {}  # a cache: the remote listing rebuilds it

    def confirm(self, name: str, entry: dict) -> None:
        self.items[name] = entry
        self.dirty = True
        if time.monotonic() - self.flushed >= STATE_FLUSH_S:
            self.flush()

    def forget(self, name: str) -> None:
        if self.items.pop(name, None) is not None:
            self.dirty = True

    def flush(self) -> None:
        if not self.dirty:
            return
        atomic_write_json(self.path, {"destination": self.destination, "vehicle": self.vehicle, "items": self.items})
        self.dirty, self.flushed = False, time.monotonic()


@contextlib.contextmanager
def _locked(folder: Path):
    """One sync per harvest folder at a time (a second one would race on the state file and `.partial/`)."""
    (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
    with open(folder / STATE_DIR / "lock", "a+") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            raise SyncError(f"{folder}: another `runtime sync` of this harvest folder is running") from None
        yield


# ---------------------------------------------------------------------------------------------- remote
class _Remote:
    """The vehicle prefix on an fsspec file system: listing, verified uploads, reads."""

    def __init__(self, url: str, vehicle: str, settings: SyncSettings):
        import fsspec.core

        self.options = settings.storage_options
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **self.options)
        except ImportError as e:  # fsspec names the package a protocol needs
            hint = " (pip install 'csst-edge[s3]')" if url.startswith(("s3://", "s3a://")) else ""
            raise SyncError(f"{_display_url(url, self.options)}: {self._say(e)}{hint}") from None
        except (ValueError, TypeError) as e:
            raise SyncError(
                f"{_display_url(url, self.options)}: cannot open the destination ({self._say(e)})"
            ) from None
        self.base = f"{root.rstrip('/')}/{vehicle}"
        self.display = _display_url(f"{url.rstrip('/')}/{vehicle}", self.options)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.object_store = bool(OBJECT_STORES & set(protocols))
        self.listing: dict[str, dict] = {}
        self.tag = "anon"  # this writer's tag in .partial/ names (claim() sets it from the holder)

    def _say(self, e: BaseException) -> str:
        text = str(e) or type(e).__name__
        return _scrub(f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text, self.options)

    def key(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def list(self) -> None:
        """Every object under the vehicle prefix: relative path -> info (size, ETag where the store has one)."""
        try:
            self.fs.invalidate_cache(self.base)  # fsspec caches listings; another process may have written since
            found = self.fs.find(self.base, detail=True)
        except FileNotFoundError:
            found = {}
        prefix = self.base.rstrip("/") + "/"
        self.listing = {
            self.fs._strip_protocol(name)[len(prefix) :]: info
            for name, info in found.items()
            if self.fs._strip_protocol(name).startswith(prefix) and info.get("type", "file") == "file"
        }

    def remove_partials(self, now: float | None = None) -> int:
        """Remove leftovers of interrupted uploads older than PARTIAL_MAX_AGE_S (their key starts with the time
        they were begun); younger ones may belong to a sync still running elsewhere."""
        now = time.time() if now is None else now

        def removable(rel: str) -> bool:
            stamp, _, rest = rel.split("/", 1)[1].partition("-")
            if not stamp.isdigit():
                return True  # an unstamped (older) partial counts as old
            # this folder's own leftover (one sync per folder runs at a time), or anyone's old enough to be dead
            return rest.startswith(f"{self.tag}-") or now - int(stamp) / 1000 > PARTIAL_MAX_AGE_S

        partials = [rel for rel in self.listing if rel.startswith(".partial/") and removable(rel)]
        for rel in partials:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.key(rel))
            self.listing.pop(rel, None)
        return len(partials)

    def claim(self, holder: dict) -> None:
        """Record this sync as the prefix's writer; a different writer's record younger than PARTIAL_MAX_AGE_S
        is a SyncError naming it (two folders syncing into one vehicle prefix would undo each other)."""
        key = self.key(LOCK_KEY)
        self.tag = hashlib.sha256(holder["id"].encode()).hexdigest()[:8]
        try:
            current = json.loads(self.fs.cat_file(key))
        except (FileNotFoundError, ValueError):
            current = None
        if (
            isinstance(current, dict)
            and current.get("id") != holder["id"]
            and time.time() - float(current.get("time", 0)) < PARTIAL_MAX_AGE_S
        ):
            raise SyncError(
                f"{self.display}: another sync is writing this vehicle prefix ({current.get('holder', '?')}, "
                f"since {time.strftime('%H:%M:%S', time.localtime(float(current.get('time', 0))))}); "
                "give each harvest folder its own --vehicle"
            )
        if not self.object_store:
            self.fs.makedirs(self.base, exist_ok=True)
        self.fs.pipe_file(key, json.dumps({**holder, "time": time.time()}).encode())

    def release(self, holder: dict) -> None:
        with contextlib.suppress(Exception):
            current = json.loads(self.fs.cat_file(self.key(LOCK_KEY)))
            if current.get("id") == holder["id"]:
                self.fs.rm_file(self.key(LOCK_KEY))

    def tidy(self) -> None:
        """Remove the empty `.partial/` folder a file-system destination keeps (object stores have no folders)."""
        if not self.object_store:
            with contextlib.suppress(Exception):
                self.fs.rmdir(self.key(".partial"))

    def matches(self, rel: str, data: bytes, md5: str, info: dict | None = None) -> str | None:
        """How the object at `rel` was confirmed to hold exactly `data` ('etag' / 'read-back' / 'earlier' in this
        run), or None."""
        if info is None:
            try:
                self.fs.invalidate_cache(self.key(rel))
                info = self.fs.info(self.key(rel))
            except FileNotFoundError:
                return None
        if int(info.get("size", -1)) != len(data):
            return None
        if info.get("confirmed_md5") == md5:
            return "earlier"  # put() confirmed it in this run
        if _md5_of(info) == md5:
            return "etag"
        # no MD5 from the store, or an ETag that is not one (multipart, SSE-KMS): read the object back
        try:
            back = self.fs.cat_file(self.key(rel))
        except FileNotFoundError:
            return None
        return "read-back" if back == data else None

    def describes(self, rel: str, sha: str) -> bool:
        """Whether the row object at `rel` describes the image `sha` (written for another local item whose JPEG
        has the very same bytes: the image is there once, and so is its row)."""
        try:
            return json.loads(self.fs.cat_file(self.key(rel))).get("sha256") == sha
        except (FileNotFoundError, ValueError, AttributeError):
            return False

    def put(self, rel: str, data: bytes, md5: str, bucket: TokenBucket | None, on_bytes) -> str:
        """Upload `data` to a temporary key, move it to `rel`, confirm it; returns how it was confirmed."""
        final = self.key(rel)
        tmp = self.key(f".partial/{int(time.time() * 1000)}-{self.tag}-{uuid.uuid4().hex}-{rel.replace('/', '_')}")
        if not self.object_store:
            self.fs.makedirs(self.fs._parent(tmp), exist_ok=True)
            self.fs.makedirs(self.fs._parent(final), exist_ok=True)
        chunk = CHUNK if bucket is None else int(bucket.burst)
        try:
            with self.fs.open(tmp, "wb") as f:
                for start in range(0, len(data), chunk):
                    piece = data[start : start + chunk]
                    if bucket is not None:
                        bucket.consume(len(piece))
                    f.write(piece)
                    on_bytes(len(piece))
            self.fs.mv(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise
        how = self.matches(rel, data, md5)
        if how is None:
            raise SyncError(f"{self.display}/{rel}: the uploaded object does not match the local file")
        self.listing[rel] = {"size": len(data), "type": "file", "confirmed_md5": md5}
        return how


def _md5_of(info: dict) -> str | None:
    """The object's MD5 (hex) where the store reports one: an S3 single-part ETag, or GCS's base64 md5Hash."""
    etag = info.get("ETag") or info.get("etag")
    if isinstance(etag, str):
        etag = etag.strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{32}", etag):
            return etag
    md5_b64 = info.get("md5Hash")
    if isinstance(md5_b64, str):
        with contextlib.suppress(ValueError):
            return base64.b64decode(md5_b64).hex()
    return None


# ---------------------------------------------------------------------------------------------- the sync
def _vehicle_name(folder: Path, vehicle: str | None) -> str:
    if vehicle is None:
        try:
            vehicle = json.loads((folder / "meta.json").read_text(encoding="utf-8")).get("vehicle")
        except (OSError, ValueError, AttributeError):
            vehicle = None
        if not vehicle:
            raise SyncError(f"{folder}: no vehicle name in meta.json; give --vehicle")
    if not storage.is_vehicle_name(vehicle):
        raise SyncError(f"--vehicle {vehicle!r}: use letters, digits, '.', '_' and '-' only (it is a path prefix)")
    return vehicle


def _row(record: dict, sha: str, size: int) -> bytes:
    """The remote manifest row: deterministic bytes, so a rewrite is byte-identical."""
    row = {**record, "image": f"images/{sha}.jpg", "harvest_image": record["image"], "sha256": sha, "bytes": size}
    return (json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def sync_harvest(
    folder: str | os.PathLike,
    dest: str,
    settings: SyncSettings | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_item: Callable[[str, str], None] | None = None,
) -> SyncSummary:
    """Upload the finished items of harvest `folder` to `dest/<vehicle>/`. Callbacks (all optional): `on_start(items,
    bytes to consider)`, `on_bytes(n)` per chunk sent, `on_item(name, outcome)` with outcome uploaded / remote /
    deleted / skipped."""
    settings = settings or SyncSettings()
    folder = Path(folder)
    start = time.monotonic()
    if not (folder / MANIFEST).is_file():
        raise SyncError(f"{folder}: not a harvest folder (no {MANIFEST}; made by `runtime run --harvest`)")
    if settings.max_kbps < 0 or settings.retries < 0:
        raise SyncError("--max-kbps and --retries must be >= 0")
    if storage.has_userinfo(dest):
        raise SyncError(
            f"{storage.redact(dest)}: the destination URL carries a user or password, which would be printed and "
            "saved; give credentials in the environment (AWS_ACCESS_KEY_ID ...) or with -O options"
        )
    vehicle = _vehicle_name(folder, settings.vehicle)
    remote = _Remote(dest, vehicle, settings)
    summary = SyncSummary(destination=remote.display, vehicle=vehicle)
    bucket = None
    if settings.max_kbps > 0:  # chunks of a quarter second's worth (1-64 KiB): the cap holds over short stretches too
        rate = settings.max_kbps * 1000 / 8
        bucket = TokenBucket(rate, burst=max(1024, min(CHUNK, int(rate / 4))))
    on_bytes = on_bytes or (lambda n: None)
    on_item = on_item or (lambda name, outcome: None)
    verified = set()

    def count(n: int) -> None:
        summary.bytes_uploaded += n
        on_bytes(n)

    def attempt(what: str, fn, *args):
        for k in range(settings.retries + 1):
            try:
                return fn(*args)
            except SyncError:
                raise
            except Exception as e:  # a dropped link, a refused request: retry, then stop (the next run resumes)
                if k == settings.retries:
                    raise SyncError(
                        f"{remote.display}: {what} failed after {settings.retries + 1} attempts ({remote._say(e)}); "
                        "run the sync again to resume"
                    ) from None
                time.sleep(settings.backoff_s * 2**k)

    with _locked(folder):
        dest_id = hashlib.sha256(f"{remote.display}|{vehicle}".encode()).hexdigest()[:16]
        state = _State(folder / STATE_DIR / f"state-{dest_id}.json", remote.display, vehicle)
        try:
            import socket

            host = socket.gethostname()
            holder = {"id": f"{host}:{folder.resolve()}", "holder": f"{host} pid {os.getpid()}"}
            attempt("claiming the vehicle prefix", remote.claim, holder)
            attempt("listing", remote.list)
            summary.partials_removed = attempt("cleaning up .partial/", remote.remove_partials)
            records = read_harvest_records(folder)
            summary.items = len(records)
            if on_start:
                on_start(len(records), sum(int(r.get("bytes", 0)) for r in records))
            live = {r["name"] for r in records}
            for name in [n for n in state.items if n not in live]:
                state.forget(name)  # evicted or deleted since: nothing to keep track of
            for record in records:
                outcome = _sync_item(folder, record, remote, state, settings, bucket, count, attempt, summary, verified)
                on_item(record["name"], outcome)
            remote.tidy()
        finally:
            state.flush()
            if "holder" in locals():
                remote.release(holder)
    summary.verified_by = sorted(verified)
    summary.seconds = time.monotonic() - start
    return summary


def _sync_item(
    folder, record, remote: _Remote, state: _State, settings: SyncSettings, bucket, count, attempt, summary, how
):
    name, path = record["name"], folder / record["image"]
    expected = record.get("bytes")
    try:
        stat = path.stat()
    except FileNotFoundError:  # evicted between the manifest read and now
        summary.skipped += 1
        return "skipped"
    known = state.items.get(name)
    if (
        not settings.delete_local
        and known
        and (known.get("bytes"), known.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)
        and _listed(remote, known["sha256"], _row(record, known["sha256"], stat.st_size), stat.st_size)
    ):
        # confirmed by an earlier run, unchanged here and still listed with its sizes: not even read again
        summary.already_remote += 1
        return "remote"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        summary.skipped += 1
        return "skipped"
    if expected is not None and len(data) != int(expected):
        summary.skipped += 1  # not the file the manifest row describes: never upload it
        return "skipped"
    sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest()
    image_rel, row_rel = f"images/{sha}.jpg", f"manifest/{sha}.json"
    row = _row(record, sha, len(data))
    row_md5 = hashlib.md5(row, usedforsecurity=False).hexdigest()
    objects = ((image_rel, data, md5), (row_rel, row, row_md5))  # the row only after its image
    if known and known.get("sha256") == sha and _listed(remote, sha, row, len(data)):
        # to be deleted: confirmed by an earlier run, but deleting needs a fresh confirmation (size and hash)
        if all(attempt(f"checking {rel}", remote.matches, rel, b, m) for rel, b, m in objects):
            summary.already_remote += 1
            return _maybe_delete(folder, record, path, state, settings, summary) or "remote"
    sent = False
    for rel, payload, digest in objects:
        listed = remote.listing.get(rel)
        found = attempt(f"checking {rel}", remote.matches, rel, payload, digest, listed) if listed else None
        if found is None and listed and rel == row_rel and attempt(f"reading {rel}", remote.describes, rel, sha):
            found = "read-back"
        if found is None:
            found = attempt(f"uploading {rel}", remote.put, rel, payload, digest, bucket, count)
            sent = True
        if found in ("etag", "read-back"):
            how.add(found)
    state.confirm(name, {"sha256": sha, "md5": md5, "bytes": len(data), "mtime_ns": stat.st_mtime_ns})
    if sent:
        summary.uploaded += 1
    else:
        summary.already_remote += 1
    return _maybe_delete(folder, record, path, state, settings, summary) or ("uploaded" if sent else "remote")


def _listed(remote: _Remote, sha: str, row: bytes, size: int) -> bool:
    """Whether the start-of-run listing has the item's image and row with their sizes."""
    sizes = {f"images/{sha}.jpg": size, f"manifest/{sha}.json": len(row)}
    return all(int(remote.listing.get(rel, {}).get("size", -1)) == n for rel, n in sizes.items())


def _maybe_delete(folder: Path, record: dict, path: Path, state: _State, settings: SyncSettings, summary) -> str | None:
    if not settings.delete_local:
        return None
    # log first, delete second (the harvester's order): a crash in between leaves a file its next open deletes
    append_jsonl(
        folder / MANIFEST,
        {
            "event": "evict",
            "name": record["name"],
            "image": record["image"],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reason": "synced",
        },
    )
    path.unlink(missing_ok=True)
    state.forget(record["name"])
    summary.deleted_local += 1
    return "deleted"


def read_synced_records(dest: str, vehicle: str | None = None, storage_options: dict | None = None) -> list[dict]:
    """The manifest rows of every item synced to `dest` (one vehicle, or all), each with `url`: the image object's
    fsspec URL. Rows are complete items: a row is written only after its image is confirmed."""
    import fsspec.core

    fs, root = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    root = root.rstrip("/")
    vehicles = [vehicle] if vehicle else sorted(Path(p).name for p in fs.ls(root, detail=False))
    rows = []
    for v in vehicles:
        if not storage.is_vehicle_name(v):
            continue  # not a vehicle prefix sync writes (.partial, a stray key)
        prefix = f"{root}/{v}/"
        for key in sorted(fs.find(f"{root}/{v}/manifest")):
            rel = fs._strip_protocol(key)[len(prefix) :] if fs._strip_protocol(key).startswith(prefix) else ""
            try:
                row = json.loads(fs.cat_file(key)) if storage.SYNCED_OBJECT.match(rel) else None
            except (ValueError, UnicodeDecodeError):
                row = None
            sha = rel.rsplit("/", 1)[-1].removesuffix(".json")
            if not isinstance(row, dict) or row.get("image") != f"images/{sha}.jpg":
                warn(f"{_display_url(dest, storage_options)}/{v}: skipped {rel or key!r} (not a row sync wrote)")
                continue  # a row naming any other image is never followed
            row["url"] = fs.unstrip_protocol(f"{root}/{v}/{row['image']}")
            rows.append(row)
    return rows
