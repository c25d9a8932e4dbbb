"""The Python the data sync runs on a host (``python -S -c``: the standard library alone).

``PROBE_PY`` says which of a run's files the host's cache holds, ``RECEIVE_PY`` takes the
files sent, ``PRUNE_PY`` drops what no run needs (see ``remote.hosts.data_sync``).

A cached file is used only once its content is known to be its name (``VERIFY_PY``): the
receiver records each file's size, modification time, change time (ctime), inode and device
in the cache's ``.verified`` index as it renames it into place, and each probe compares them
again. A file whose record differs in any (a rewrite with its mtime restored still moves its
ctime, which no user can set back; a file put in its place has another inode) is hashed whole
(sha256) before it counts; one whose hash is not its name is removed and sent again. On top,
every probe re-hashes, in random order, the files it trusts by their record, ``SAMPLE_BYTES``
at most: a small data set is re-hashed whole at every run, a large one a random part of it
(a file over ``SAMPLE_BYTES`` is checked by its record alone).
"""

from __future__ import annotations

from remote.hosts.data_errors import ERRORS_PY
from remote.hosts.data_sender import PIPE_BYTES
from remote.hosts.data_tree import CHUNK_BYTES

STAMP_NS = 86_400 * 10**9
"""The modification time of every cached file (1970-01-02): a write through a link changes it."""
SAMPLE_BYTES = 16 << 20
"""The most bytes a probe re-hashes of the files it trusts by their record (0.02-0.1 s)."""

VERIFY_PY = f"""
INDEX = ".verified"


def read_index(cache):
    try:
        with open(os.path.join(cache, INDEX)) as f:
            index = json.load(f)
        return index if isinstance(index, dict) else {{}}
    except (OSError, ValueError):
        return {{}}


def stamp(info):
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


def digest_of(path):
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def drop(cache, name, index):  # content that is not its name: never used, sent again
    index.pop(name, None)
    try:
        os.unlink(os.path.join(cache, name))
    except OSError:
        pass


def verified(cache, names, index):  # the names whose content is their name
    good, trusted = [], []
    for name in names:
        path = os.path.join(cache, name)
        try:
            if index.get(name) == stamp(os.stat(path)):
                trusted.append(name)
            elif digest_of(path) == name:
                good.append(name)
            else:
                drop(cache, name, index)
        except OSError:
            index.pop(name, None)
    budget = {SAMPLE_BYTES}
    for name in sorted(trusted, key=lambda _: os.urandom(8)):
        size = index[name][0]
        if size > budget:
            good.append(name)
            continue
        budget -= size
        try:
            if digest_of(os.path.join(cache, name)) == name:
                good.append(name)
            else:
                drop(cache, name, index)
        except OSError:
            index.pop(name, None)
    return set(good)


def record(cache, names, index):
    for name in names:
        try:
            index[name] = stamp(os.stat(os.path.join(cache, name)))
        except OSError:
            index.pop(name, None)
    kept = set(os.listdir(cache))
    tmp = os.path.join(cache, ".verified-" + os.urandom(8).hex())
    try:
        with open(tmp, "w") as out:
            json.dump({{n: s for n, s in index.items() if n in kept}}, out)
        os.replace(tmp, os.path.join(cache, INDEX))
    except OSError:  # a full disk: the next probe hashes these files again
        try:
            os.unlink(tmp)
        except OSError:
            pass
"""
"""How a cached file is checked before it counts (see the module's docstring): ``verified``
after the probe's stat checks, ``record`` once a file is marked used or received (its ctime
moved by that ``chmod``). No ``random``: the order comes from ``os.urandom``."""

WRITE_LINKS_PY = """
def write_links(cache, links, manifest):
    lines = "".join((os.path.join(cache, t[4:]) if t.startswith("sha:") else t) + "\\t" + r
                    + "\\n" for t, r in links)
    manifest = os.path.expanduser(manifest)
    os.makedirs(os.path.dirname(manifest), mode=0o700, exist_ok=True)
    tmp = os.path.join(os.path.dirname(manifest), ".data-" + os.urandom(8).hex())
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(lines)
    os.replace(tmp, manifest)
"""
"""The host's link list written whole (a temporary file renamed): ``target<TAB>path`` lines,
``sha:<sha256>`` targets made the cached file's path. No ``tempfile``: the probe imports as
little as it can (each module is interpreter start-up on every host, every run)."""

PROBE_PY = "import json, os, sys\n" + ERRORS_PY + VERIFY_PY + WRITE_LINKS_PY + f"""
ask = json.loads(sys.stdin.readline())
cache = os.path.expanduser(ask["cache"])
shared = ask["local"]
if ask["marker"] and not shared:
    try:
        with open(ask["marker"][0]) as f:
            shared = f.read() == ask["marker"][1]
    except OSError:
        pass
index = read_index(cache)
found = []
for sha, size in ask["files"]:
    try:
        info = os.stat(os.path.join(cache, sha))
    except OSError:
        continue
    if info.st_size == size and info.st_mtime_ns == {STAMP_NS} and not info.st_mode & 0o222:
        found.append(sha)
sized = []
for name in os.listdir(cache) if ask["sizes"] and not shared and os.path.isdir(cache) else []:
    try:  # a cached file the size of one not hashed yet: maybe that file, touched
        info = os.stat(os.path.join(cache, name))
    except OSError:
        continue
    if (len(name) == 64 and name not in found and info.st_size in ask["sizes"]
            and info.st_mtime_ns == {STAMP_NS} and not info.st_mode & 0o222):
        sized.append([name, info.st_size])
good = verified(cache, found + [name for name, _ in sized], index)
have = [sha for sha in found if sha in good]
alike = [[name, size] for name, size in sized if name in good]
for sha in have:
    try:  # marked used (its ctime): a prune beside this run's sync keeps it
        os.chmod(os.path.join(cache, sha), 0o444)
    except OSError:
        pass
if found or sized:  # each file's record as it is now (that chmod moved its ctime)
    record(cache, have + [name for name, _ in alike], index)
probe = cache
while not os.path.isdir(probe):
    probe = os.path.dirname(probe) or "/"
missing = [p for p in ask["paths"] if not os.path.exists(os.path.expanduser(p))]
linked = bool(ask["manifest"]) and (shared or not ask["sizes"] and len(have) == len(ask["files"]))
if linked:  # nothing to send: the run's links now, and no second command
    write_links(cache, ask["links"]["shared" if shared else "cached"], ask["manifest"])
disk = os.statvfs(probe)
side = os.path.join(cache, ".chunks")
chunked = not shared and os.path.isdir(side) and bool(os.listdir(side))
print(json.dumps({{"have": have, "alike": alike, "shared": shared, "missing": missing,
                  "free": disk.f_bavail * disk.f_frsize, "linked": linked,
                  "chunked": chunked}}))
"""

PRUNE_PY = """
def prune(cache, runs, keep_runs, keep_unused_s):
    keep, finished = set(), []
    for run in os.listdir(runs) if os.path.isdir(runs) else []:
        hosts = os.path.join(runs, run, "hosts")
        for name in os.listdir(hosts) if os.path.isdir(hosts) else []:
            if not name.endswith(".data"):
                continue
            try:
                path = os.path.join(hosts, name)
                with open(path) as f:
                    used = {os.path.basename(t) for t, _, r in
                            (line.partition("\\t") for line in f)
                            if os.path.dirname(t) == cache}
                when = os.stat(path).st_mtime
            except OSError:
                continue
            if os.path.exists(path[:-len(".data")] + ".exit"):
                finished.append((when, used))
            else:  # running, or never finished: its links are never broken
                keep |= used
    for _, used in sorted(finished, key=lambda one: -one[0])[:keep_runs]:
        keep |= used
    for name in os.listdir(cache):
        path = os.path.join(cache, name)
        try:
            if (len(name) == 64 and name not in keep
                    and time.time() - os.stat(path).st_ctime > keep_unused_s):
                os.unlink(path)
        except OSError:
            pass
    side = os.path.join(cache, ".chunks")
    for name in os.listdir(side) if os.path.isdir(side) else []:
        if not os.path.exists(os.path.join(cache, name)):  # its file pruned: so is its list
            try:
                os.unlink(os.path.join(side, name))
            except OSError:
                pass
"""
"""Remove from a host's data cache what no run needs (``KEEP_RUNS``, ``KEEP_UNUSED_S``): run
after each sync that sent files (the only time the cache grows). ``runs`` holds the run
directories, each host's link list ``hosts/<host>.data`` beside its exit file
``hosts/<host>.exit`` (written when the launcher ends)."""

ASSEMBLE_PY = f"""
def copy_piece(src, cache, source, at, length, digest, out, buf):
    # A piece of a file: the stream's next bytes (source None), or bytes of a cached file.
    where = src if source is None else open(os.path.join(cache, source), "rb")
    try:
        if source is not None:
            where.seek(at)
        while length:
            count = where.readinto(buf[:min(length, {CHUNK_BYTES})])
            if not count:
                sys.exit("corral: the data stream ended early" if source is None
                         else "corral: cached data file " + source + " is shorter than listed")
            digest.update(buf[:count])
            out.write(buf[:count])
            length -= count
    finally:
        if source is not None:
            where.close()
"""
"""A file built from its recipe's pieces (``remote.hosts.data_chunks.recipe``): each piece
hashed as it is written; the whole is then checked against the file's sha256."""

SIDECARS_PY = """
def write_sidecars(cache, sidecars):
    side = os.path.join(cache, ".chunks")
    for sha, chunks in sidecars.items():
        if len(sha) != 64 or not os.path.exists(os.path.join(cache, sha)):
            continue
        try:
            os.makedirs(side, exist_ok=True)
            tmp = os.path.join(side, ".part-" + os.urandom(8).hex())
            with open(tmp, "w") as out:
                json.dump(chunks, out)
            os.replace(tmp, os.path.join(side, sha))
        except OSError:  # a full disk: that file's chunks are not found, it is sent whole
            pass


def find_chunks(cache, wanted):
    found, index, side = {}, read_index(cache), os.path.join(cache, ".chunks")
    for name in os.listdir(side) if os.path.isdir(side) else []:
        try:  # only a cached file whose record is unchanged (VERIFY_PY) lends its bytes
            if index.get(name) != stamp(os.stat(os.path.join(cache, name))):
                continue
            with open(os.path.join(side, name)) as f:
                chunks = json.load(f)
        except (OSError, ValueError):
            continue
        at = 0
        for ident, length in chunks:
            if ident in wanted and ident not in found:
                found[ident] = [name, at]
            at += length
        if len(found) == len(wanted):
            break
    return found
"""
"""Each cached file's chunk list (``.chunks/<sha256>``: ``[id, length]``, in file order)
written, and the chunks a host holds found in them (id → ``[sha256, offset]``)."""

CHUNKS_PY = ("import json, os, sys\n" + VERIFY_PY + SIDECARS_PY + """
ask = json.loads(sys.stdin.readline())
cache = os.path.expanduser(ask["cache"])
write_sidecars(cache, ask["sidecars"])
print(json.dumps({"found": find_chunks(cache, set(ask["ids"])) if ask["ids"] else {}}))
""")
"""Asked with the chunk ids of the files a sync will send, a host answers where its cache
holds them; given chunk lists of files it received whole, it keeps them."""

RECEIVE_PY = ("import fcntl, hashlib, json, os, sys, tempfile, time\n" + ERRORS_PY + VERIFY_PY
              + WRITE_LINKS_PY + PRUNE_PY + ASSEMBLE_PY + SIDECARS_PY
              + f"""
if sys.platform.startswith("linux"):  # a 1 MiB pipe from sshd: fewer reads, fewer wake-ups
    try:
        fcntl.fcntl(0, getattr(fcntl, "F_SETPIPE_SZ", 1031), {PIPE_BYTES})
    except OSError:  # not a pipe, or larger than this system allows
        pass
src = sys.stdin.buffer
buf = memoryview(bytearray({CHUNK_BYTES}))  # one buffer, read into, for every chunk
head = json.loads(src.readline())
cache = os.path.expanduser(head["cache"])
os.makedirs(cache, exist_ok=True)
for name in os.listdir(cache):  # what a killed sync left: never used, removed once old
    path = os.path.join(cache, name)
    try:
        if name.startswith(".part-") and time.time() - os.stat(path).st_mtime > 3600:
            os.unlink(path)
    except OSError:
        pass
got = []
for sha, size, *recipe in head["files"]:
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".part-")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for source, at, length in recipe[0] if recipe and recipe[0] else [[None, 0, size]]:
                copy_piece(src, cache, source, at, length, digest, out, buf)
        if sha is not None and digest.hexdigest() != sha:
            if recipe and recipe[0]:  # a cached file lent wrong bytes: hashed, dropped if so
                lent, index = {{p[0] for p in recipe[0] if p[0]}}, read_index(cache)
                for name in lent - verified(cache, lent, {{}}):
                    drop(cache, name, index)
                record(cache, [], index)
            sys.exit("corral: data file " + sha + " arrived changed")
        os.chmod(tmp, 0o444)
        os.utime(tmp, ns=({STAMP_NS}, {STAMP_NS}))
        os.replace(tmp, os.path.join(cache, digest.hexdigest()))
        got.append(digest.hexdigest())
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
record(cache, got, read_index(cache))  # what the probes compare (VERIFY_PY)
write_sidecars(cache, head.get("sidecars", {{}}))
links = [["sha:" + got[int(t[4:])] if t.startswith("new:") else t, r] for t, r in head["links"]]
write_links(cache, links, head["manifest"])
prune(cache, os.path.expanduser(head["runs"]), *head["keep"])
print(json.dumps({{"got": got}}))
""")


