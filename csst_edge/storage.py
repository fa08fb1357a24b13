"""Paths and URLs, one interface: local paths (and `file://`) as today, object stores through fsspec.

    storage.write_bytes("s3://bucket/pseudo/labels/a.png", data)    # one PUT: the object appears whole or not at all
    storage.write_bytes("runs/pseudo/labels/a.png", data)           # temp file + fsync + rename (csst_edge.fileio)
    storage.find("s3://bucket/fleet/car1/harvest")                  # every file below, as full URLs, sorted

Local paths and `file://` URLs come back as `pathlib.Path`; everything else stays a string URL. Writes to an object
store put the whole object at once, which S3 / GCS make atomic, so a reader never sees a torn object (there is no
append: a manifest on an object store is written in whole parts, see `ManifestWriter`).

Credentials come from each backend's usual environment and config files (AWS_ACCESS_KEY_ID / ~/.aws for S3,
GOOGLE_APPLICATION_CREDENTIALS / gcloud for GCS); the endpoint of an S3-compatible store from AWS_ENDPOINT_URL or
fsspec's own config (FSSPEC_S3_ENDPOINT_URL, ~/.config/fsspec). A URL never carries them: one with a user or
password is refused, and every URL that reaches a log, a manifest or a report goes through `redact` first.

Reading at scale (training from a bucket) goes through the local cache (`mirror`, `cache_files`): objects are
downloaded once to $CSST_CACHE (default ~/.cache/csst-edge) and re-fetched only when their size or ETag changes.
Torch-free, and fsspec is imported on first use, so the vehicle runtime pays nothing for it.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from csst_edge.errors import CsstError
from csst_edge.fileio import append_jsonl, atomic_write_bytes, parse_jsonl_lines

# protocol -> the extra that installs its fsspec backend
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")
# user info runs to the last '@' before the path: a password may hold '@' itself (https://user:pa@ss@host)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+://)[^/\s]*@")
# secret-looking query values in any text (X-Amz-Signature=..., token=..., sig=...)
_SECRET_VALUE = re.compile(
    r"([?&][^=&\s]*(?:secret|token|key|password|passwd|signature|credential|sig|auth|x-amz-)[^=&\s]*=)[^&\s#]*", re.I
)
# a synced object under a vehicle prefix: exactly what `runtime sync` writes
SYNCED_OBJECT = re.compile(r"^(images/[0-9a-f]{64}\.jpg|manifest/[0-9a-f]{64}\.json)$")
# a vehicle id: one plain folder name (it names harvested files and the vehicle's bucket prefix)
VEHICLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def is_vehicle_name(name) -> bool:
    return isinstance(name, str) and bool(VEHICLE_NAME.fullmatch(name))


_SECRET_QUERY = re.compile(r"(secret|token|key|password|passwd|signature|credential|sig|auth|x-amz-)", re.I)


class StorageError(CsstError):
    """A path or URL cannot be read or written; the message names it (without credentials)."""


# ------------------------------------------------------------------------------------------------ names
def is_url(location) -> bool:
    """True for `scheme://...` (s3://, gs://, file://, memory://, http://); False for plain paths."""
    return isinstance(location, str) and bool(_URL.match(location))


def local_path(location) -> Path | None:
    """The local path of a plain path or a `file://` URL; None for anything remote."""
    if isinstance(location, os.PathLike):
        return Path(location)
    if not is_url(location):
        return Path(location)
    if location.lower().startswith("file://"):
        return Path(urlsplit(location).path)
    return None


def is_remote(location) -> bool:
    return local_path(location) is None


def as_location(location) -> Path | str:
    """A plain path or file:// URL as a Path, a remote URL as its string: the form every function here returns."""
    local = local_path(location)
    return local if local is not None else str(location).rstrip("/")


def redact(location) -> str:
    """The URL without user, password or secret-looking query parameters: s3://KEY:SECRET@bucket/x -> s3://bucket/x.
    Plain paths come back unchanged."""
    text = str(location)
    if not is_url(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not is_secret_name(k)]
    query = urlencode(kept)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_secret_name(name: str) -> bool:
    """Whether a query parameter or storage option called `name` holds a credential (key, token, signature...)."""
    return bool(_SECRET_QUERY.search(name))


def redact_text(text: str) -> str:
    """Any text (an error message) with the user:password@ part and secret query values of every URL removed."""
    return _SECRET_VALUE.sub(r"\1REDACTED", _USERINFO.sub(r"\1", str(text)))


def url_secret(location) -> str | None:
    """What credential a URL carries, in words ("a user name or password", "the query parameter 'token'"), or None.
    Configs and destinations refuse such URLs: what they hold is saved (config.yaml, checkpoints) and printed."""
    text = str(location)
    if not is_url(text):
        return None
    parts = urlsplit(text)
    if "@" in parts.netloc:
        return "a user name or password"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if is_secret_name(name):
            return f"the query parameter '{name}'"
    return None


def has_userinfo(location) -> bool:
    """Whether a URL carries a user or password (`scheme://user:pw@host/...`)."""
    text = str(location)
    return is_url(text) and "@" in urlsplit(text).netloc


def safe_relative(name) -> str | None:
    """The one rule for a name that comes from data (a manifest row, an object key, a list-file line, a harvest or
    vehicle name): a relative posix path of plain segments (no '', '.', '..', no absolute path, drive, backslash
    or NUL), which therefore stays inside the folder it is joined to. The name itself, or None (skip it)."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        return None
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or is_url(name):
        return None
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    return name


def inside(base, name) -> Path | str | None:
    """base joined with a data-supplied relative `name`, or None when `name` breaks safe_relative or (for a local
    base) resolves outside it through a symlink."""
    if safe_relative(name) is None:
        return None
    target = join(base, name)
    if isinstance(target, Path):
        root = Path(base).resolve()
        resolved = target.resolve()
        if resolved != root and root not in resolved.parents:
            return None
    return target


def join(base, *parts: str) -> Path | str:
    """base / parts, for a path or a URL (URLs join with '/')."""
    base = as_location(base)
    if isinstance(base, Path):
        return base.joinpath(*parts)
    tail = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
    return f"{base}/{tail}" if tail else base


def name_of(location) -> str:
    """The last component (file or folder name) of a path or URL."""
    loc = as_location(location)
    return loc.name if isinstance(loc, Path) else loc.rstrip("/").rsplit("/", 1)[-1]


def parent_of(location) -> Path | str:
    loc = as_location(location)
    if isinstance(loc, Path):
        return loc.parent
    head, _, _ = loc.rstrip("/").rpartition("/")
    return head if not head.endswith(":/") else loc


def relative_to(location, base) -> str:
    """location relative to base, as a posix path ('seq01/000123.jpg')."""
    loc, root = as_location(location), as_location(base)
    if isinstance(loc, Path) and isinstance(root, Path):
        return loc.relative_to(root).as_posix()
    loc, root = str(loc), str(root).rstrip("/") + "/"
    if not loc.startswith(root):
        raise ValueError(f"{redact(loc)} is not below {redact(root)}")
    return loc[len(root) :]


# ------------------------------------------------------------------------------------------- filesystems
def filesystem(location):
    """(fsspec filesystem, path inside it) for a URL. Errors name the URL (redacted) and the extra to install."""
    if not is_url(location):
        raise StorageError(f"{location}: not a URL")
    text = str(location)
    parts = urlsplit(text)
    protocol = parts.scheme.lower()
    if "@" in parts.netloc and protocol not in ("http", "https", "ftp", "sftp", "ssh"):
        raise StorageError(
            f"{redact(text)}: credentials in a {protocol}:// URL are not used; set them in the environment or the "
            "backend's config file (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)"
        )
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is a core dependency
        raise StorageError(f"{redact(text)}: URLs need fsspec (pip install fsspec)") from None
    try:
        return fsspec.core.url_to_fs(text)
    except ImportError:
        extra = EXTRAS.get(protocol)
        hint = f'pip install "csst-edge[{extra}]"' if extra else f"install the fsspec backend for {protocol}://"
        raise StorageError(f"{redact(text)}: {protocol}:// needs its fsspec backend: {hint}") from None
    except ValueError as e:
        raise StorageError(f"{redact(text)}: {redact_text(e)}") from None


def _fail(location, action: str, error: BaseException) -> StorageError:
    if isinstance(error, FileNotFoundError):
        return StorageError(f"{redact(location)}: not found")
    if isinstance(error, PermissionError):
        return StorageError(f"{redact(location)}: permission denied ({action})")
    detail = redact_text(str(error).splitlines()[0][:200] if str(error) else type(error).__name__)
    return StorageError(f"{redact(location)}: cannot {action} ({detail})")


def _remote(location) -> tuple[object, str]:
    return filesystem(str(location))


_MISSING = object()


def _on_remote(location, action: str, call, missing=_MISSING):
    """`call(fs, path)` on the store behind a URL. fsspec back-ends raise their own error types (botocore, aiohttp,
    google-auth ...), so every one of them becomes one StorageError naming the location and the action; a missing
    object gives `missing` instead where the caller says a missing one is fine."""
    fs, path = _remote(location)
    try:
        return call(fs, path)
    except FileNotFoundError as e:
        if missing is _MISSING:
            raise _fail(location, action, e) from None
        return missing
    except Exception as e:
        raise _fail(location, action, e) from None


# --------------------------------------------------------------------------------------------- reading
def exists(location) -> bool:
    local = local_path(location)
    if local is not None:
        return local.exists()
    return bool(_on_remote(location, "check", lambda fs, path: fs.exists(path)))


def isfile(location) -> bool:
    local = local_path(location)
    if local is not None:
        return local.is_file()
    return bool(_on_remote(location, "check", lambda fs, path: fs.isfile(path)))


def isdir(location) -> bool:
    """A folder (locally), or a prefix with objects below it (object stores have no empty folders)."""
    local = local_path(location)
    if local is not None:
        return local.is_dir()
    return bool(_on_remote(location, "check", lambda fs, path: fs.isdir(path)))


def read_bytes(location) -> bytes:
    local = local_path(location)
    if local is not None:
        return local.read_bytes()  # callers map OSError to their own error naming the file
    return _on_remote(location, "read", lambda fs, path: fs.cat_file(path))


def read_text(location) -> str:
    return read_bytes(location).decode("utf-8")


def read_json(location):
    return json.loads(read_text(location))


def sha256(location, length: int = 16) -> str:
    """Short content hash of a file or object (ties outputs to the checkpoint that made them)."""
    local = local_path(location)
    if local is not None:
        from csst_edge.fileio import file_sha256

        return file_sha256(local, length)
    import hashlib

    return hashlib.sha256(read_bytes(location)).hexdigest()[:length]


def find(location, detail: bool = False):
    """Every file below a folder / prefix, recursively, sorted: full paths (Path) or URLs (str). With `detail`,
    a dict location -> {"size", "token"} (token: ETag or mtime, what the cache compares)."""
    local = local_path(location)
    if local is not None:
        files = sorted(p for p in local.rglob("*") if p.is_file())
        if not detail:
            return files
        return {p: {"size": (st := p.stat()).st_size, "token": str(st.st_mtime_ns)} for p in files}
    _, path = _remote(location)
    infos = _on_remote(location, "list", lambda fs, p: fs.find(p, detail=True), missing={})
    base = str(location).rstrip("/")
    root = path.rstrip("/")
    out = {}
    for key in sorted(infos):
        info = infos[key]
        if info.get("type", "file") != "file":
            continue
        rel = key[len(root) :].lstrip("/") if key.startswith(root) else key
        out[f"{base}/{rel}" if rel else base] = {"size": int(info.get("size") or 0), "token": _token(info)}
    return out if detail else list(out)


def glob(pattern) -> list[Path | str]:
    """Paths / URLs matching a glob pattern (`*`, `**`), sorted."""
    local = local_path(pattern)
    if local is not None:
        if local.is_absolute():
            return sorted(Path("/").glob(str(local.relative_to("/"))))
        return sorted(Path().glob(str(local)))
    fs, _ = _remote(pattern)
    hits = _on_remote(pattern, "list", lambda fs, path: fs.glob(path))
    return [fs.unstrip_protocol(hit) for hit in sorted(hits)]


def _token(info: dict) -> str:
    for key in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


# --------------------------------------------------------------------------------------------- writing
def write_bytes(location, data: bytes) -> None:
    """Atomic write: temp file + rename locally, one whole-object PUT on an object store."""
    local = local_path(location)
    if local is not None:
        atomic_write_bytes(local, data)
        return
    _on_remote(location, "write", lambda fs, path: fs.pipe_file(path, data))


def write_text(location, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def write_json(location, obj) -> None:
    write_text(location, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def makedirs(location) -> None:
    """Create a local folder; a no-op on object stores (prefixes exist once an object is below them)."""
    local = local_path(location)
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)


def remove(location) -> None:
    """Delete one file / object; a missing one is not an error."""
    local = local_path(location)
    if local is not None:
        local.unlink(missing_ok=True)
        return
    _on_remote(location, "delete", lambda fs, path: fs.rm_file(path), missing=None)


def upload(local_file: str | os.PathLike, location) -> None:
    """Copy a local file to a path or URL (whole object)."""
    write_bytes(location, Path(local_file).read_bytes())


# --------------------------------------------------------------------------------------------- manifests
class ManifestWriter:
    """Appends JSON lines to `<folder>/<name>` (a JSONL manifest) wherever the folder is.

    Locally every line is appended and fsynced (csst_edge.fileio.append_jsonl). An object store cannot append, so
    lines are buffered and written as whole part objects `<stem>-part-<run>-<n>.jsonl` (every `flush_every` lines
    or `flush_seconds`); `close()` folds this writer's parts and any left by an earlier killed run into
    `<name>` and deletes them. Readers glob `manifest*.jsonl` and so see the parts too: a kill loses at most the
    lines not yet flushed, and those items are simply redone. One writer per name at a time."""

    def __init__(self, folder, name: str = "manifest.jsonl", flush_every: int = 64, flush_seconds: float = 10.0):
        self.folder = as_location(folder)
        self.name = name
        self.target = join(self.folder, name)
        self.remote = isinstance(self.folder, str)
        self.flush_every, self.flush_seconds = max(1, flush_every), flush_seconds
        self.buffer: list[str] = []
        self.parts = 0
        self.run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        self.last_flush = time.monotonic()

    def append(self, record: dict) -> None:
        if not self.remote:
            append_jsonl(self.target, record)
            return
        self.buffer.append(json.dumps(record, separators=(",", ":")))
        if len(self.buffer) >= self.flush_every or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.remote or not self.buffer:
            return
        stem = self.name.removesuffix(".jsonl")
        write_text(join(self.folder, f"{stem}-part-{self.run}-{self.parts:05d}.jsonl"), "\n".join(self.buffer) + "\n")
        self.parts += 1
        self.buffer = []

    def close(self) -> None:
        self.flush()
        if self.remote:
            compact_manifest(self.folder, self.name)


def compact_manifest(folder, name: str = "manifest.jsonl") -> None:
    """Fold the part objects of `name` into it (one whole-object write), then delete the parts. A kill between
    the two leaves lines twice, which every reader tolerates (records are keyed by name)."""
    stem = name.removesuffix(".jsonl")
    parts = [p for p in find(folder) if name_of(p).startswith(f"{stem}-part-") and name_of(p).endswith(".jsonl")]
    if not parts:
        return
    target = join(folder, name)
    text = read_text(target) if exists(target) else ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(_complete_lines(read_text(p)) for p in parts)
    write_text(target, text)
    for p in parts:
        remove(p)


def _complete_lines(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def read_jsonl(location, skipped=None) -> list[dict]:
    """The records of a JSONL file at a path or URL. A line that is not a JSON object (torn by a crash) is skipped,
    counted in `skipped["bad line"]` (a collections.Counter) and warned about; the lines after it are read."""
    local = local_path(location)
    if local is not None:
        from csst_edge.fileio import read_jsonl as read_local

        return read_local(local, skipped)
    if not exists(location):
        return []
    return parse_jsonl_lines(read_bytes(location).decode("utf-8", "replace").splitlines(), skipped, redact(location))


# ----------------------------------------------------------------------------------------------- cache
def cache_root() -> Path:
    return Path(os.environ.get("CSST_CACHE") or Path.home() / ".cache" / "csst-edge")


def cache_path(location) -> Path:
    """Where a remote object lives in the local cache: <cache>/objects/<protocol>/<bucket>/<key>. A key that would
    leave the cache (`a/../../x`, as object stores keep keys as written) is a StorageError, never followed."""
    url = redact(location)
    parts = urlsplit(url)
    key = parts.path.lstrip("/")
    root = cache_root() / "objects"
    target = root / parts.scheme / (parts.netloc or "_") / key
    if (key and safe_relative(key.rstrip("/")) is None) or safe_relative(parts.netloc or "_") is None:
        raise StorageError(f"{url}: object key would leave the local cache ({root}); not fetched")
    real_root, real = os.path.realpath(cache_root()), os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root:  # a symbolic link inside the cache pointing out of it
        raise StorageError(f"{url}: its cache path leads out of the local cache ({root}); not fetched")
    return target


def cache_files(locations: list, infos: dict | None = None) -> list[Path]:
    """Local copies of files (paths come back unchanged). A cached copy is reused when its recorded size and token
    (from `infos`, a `find(detail=True)` result) still match, or, without `infos`, when it exists: pass infos
    for objects that can change; content-named objects (harvest frames, synced items) never do."""
    out: list[Path] = []
    wanted: dict[str, list[tuple[str, Path]]] = {}
    for loc in locations:
        local = local_path(loc)
        if local is not None:
            out.append(local)
            continue
        target = cache_path(loc)
        out.append(target)
        info = (infos or {}).get(str(loc))
        if _cached(target, info):
            continue
        wanted.setdefault(urlsplit(str(loc)).scheme, []).append((str(loc), target))
    for group in wanted.values():
        fs, _ = _remote(group[0][0])
        paths = [filesystem(u)[1] for u, _ in group]
        tmps = []
        for _, target in group:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmps.append(str(target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")))
        try:
            fs.get(paths, tmps)  # one call: the backend fetches them concurrently
        except Exception as e:
            for t in tmps:
                Path(t).unlink(missing_ok=True)
            raise _fail(group[0][0] if len(group) == 1 else parent_of(group[0][0]), "download", e) from None
        for (url, target), tmp in zip(group, tmps, strict=True):
            os.replace(tmp, target)
            info = (infos or {}).get(url)
            _stamp(target, info or {"size": target.stat().st_size, "token": ""})
    return out


def local_copy(location) -> Path:
    """A local path for one file: itself, or a cached copy of a remote object (fetched again when it changed)."""
    local = local_path(location)
    if local is not None:
        return local
    info = _on_remote(location, "read", lambda fs, path: fs.info(path))
    stamp = {"size": int(info.get("size") or 0), "token": _token(info)}
    return cache_files([str(location)], {str(location): stamp})[0]


def mirror(location) -> Path:
    """A local copy of a folder / prefix (one listing, then only new or changed objects are fetched); a local
    folder comes back as it is."""
    local = local_path(location)
    if local is not None:
        return local
    infos = find(location, detail=True)
    if not infos:
        raise StorageError(f"{redact(location)}: no files found")
    cache_files(list(infos), infos)
    return cache_path(location)


def _stamp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.cache.json")


def _stamp(target: Path, info: dict) -> None:
    _stamp_path(target).write_text(json.dumps({"size": int(info.get("size", 0)), "token": info.get("token", "")}))


def _cached(target: Path, info: dict | None) -> bool:
    if not target.is_file():
        return False
    if info is None:
        return True
    try:
        stamp = json.loads(_stamp_path(target).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("size") == int(info.get("size", -1)) and stamp.get("token") == info.get("token", "")


# ----------------------------------------------------------------------------------------------- one writer
LOCK_STALE_S = 3600.0  # a lock object not refreshed for this long belongs to a writer that is gone


class LockedError(StorageError):
    """Another writer holds the folder or prefix; the message names the holder (pid, host, since)."""


class ObjectLock:
    """One writer per folder on an object store, where there is no flock: `location` (a URL) holds the holder's
    {id, pid, host, time} as one object. A record of another writer is refused (naming it) unless it is older than
    `stale_s` (refreshed by `refresh()`) or names a dead pid on this host; `release()` removes it if it is ours.
    Two writers starting in the same instant both write and read back: the one that does not find itself is
    refused. (Local folders use fileio.WriterLock, which the kernel releases when its holder dies.)"""

    def __init__(self, location: str, what: str, stale_s: float = LOCK_STALE_S):
        import socket

        self.location, self.what, self.stale_s = str(location), what, stale_s
        self.holder = {"id": uuid.uuid4().hex, "pid": os.getpid(), "host": socket.gethostname()}
        self.started = time.time()
        self._refreshed = 0.0
        current = self._read()
        if current and current.get("id") != self.holder["id"] and not self._stale(current):
            raise self._refused(current)
        self._write()
        back = self._read()
        if not back or back.get("id") != self.holder["id"]:
            raise self._refused(back or {})

    def _read(self) -> dict | None:
        try:
            fs, path = filesystem(self.location)
            fs.invalidate_cache(path)
            record = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
        except (ValueError, StorageError):
            return {}
        return record if isinstance(record, dict) else {}

    def _write(self) -> None:
        write_json(self.location, {**self.holder, "since": self.started, "time": time.time()})
        self._refreshed = time.monotonic()

    def _stale(self, record: dict) -> bool:
        if record.get("host") == self.holder["host"] and isinstance(record.get("pid"), int):
            try:
                os.kill(record["pid"], 0)
            except ProcessLookupError:
                return True  # its writer died on this machine
            except OSError:
                pass
        stamp = record.get("time")
        return not isinstance(stamp, (int, float)) or time.time() - stamp > self.stale_s

    def _refused(self, record: dict) -> LockedError:
        since = record.get("since")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, float) else ""
        return LockedError(
            f"{self.what} is being written by pid {record.get('pid', '?')} on {record.get('host', '?')}{when} "
            f"(lock {redact(self.location)}); wait for it, or delete the lock if that writer is gone"
        )

    def refresh(self) -> None:
        """Keep the lock fresh during a long run (one small write at most every stale_s / 4 seconds)."""
        if time.monotonic() - self._refreshed >= self.stale_s / 4:
            self._write()

    def release(self) -> None:
        try:
            if (self._read() or {}).get("id") == self.holder["id"]:
                remove(self.location)
        except StorageError:
            pass  # a lock left behind goes stale

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
