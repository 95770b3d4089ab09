"""A mount shared with --allow-other: each reader gets what the kernel would show that reader.

The users are the suite's own (conftest.users); what an unprivileged reader may read is
asked of the kernel itself wherever it has a view of the same data (bpffs pins, its own
/proc), and otherwise is the rule iterfs(7) states (EACCES where the kernel's view needs
a capability or a root-owned 0400 file).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from iterfs import credentials
from iterfs.credentials import CAP_BPF
from iterfs.discovery import kernel_targets

from conftest import run_iterfs
from helpers import (bpftool_json, compile_bpf, kernel_refusal, make_map, make_sk_storage_map, settled, start_mount,
                     task_lines, world_traversable_dir)

pytestmark = pytest.mark.fuse

# os.listdir() as the user: the errno where it fails, else the names, one per line
_LIST_AS = """
import os, sys
try:
    names = os.listdir(sys.argv[1])
except OSError as e:
    sys.stderr.write(str(e.errno))
    sys.exit(1)
sys.stdout.write("".join(name + "\\n" for name in names))
"""


def _read(path) -> tuple[int, bytes]:
    """(0, contents) of path as root reads it, or (errno, b"")."""
    try:
        return 0, Path(path).read_bytes()
    except OSError as e:
        return e.errno, b""


def _listed_as(user, path) -> tuple[int, list[str]]:
    """(0, sorted names) of directory path as user lists it, or (errno, [])."""
    done = user.run("python3", "-I", "-S", "-c", _LIST_AS, str(path))
    if done.returncode:
        return int(done.stderr.decode().strip()), []
    return 0, sorted(done.stdout.decode().splitlines())


def _modes_as(user, paths) -> dict[str, int]:
    """The permission bits stat(1) run as user gives each of paths."""
    done = user.run("stat", "-c", "%a %n", *(str(p) for p in paths))
    assert done.returncode == 0, done.stderr.decode()
    modes = {}
    for line in done.stdout.decode().splitlines():
        mode, name = line.split(" ", 1)
        modes[name] = int(mode, 8)
    return modes


def _ls(*args: str, user=None) -> list[str]:
    """What ls -A1 prints (as user, or as root), one name a line."""
    argv = ["ls", "-A1", *args]
    done = user.run(*argv) if user else subprocess.run(argv, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


def _sleeper(user) -> subprocess.Popen:
    """A sleep of user's, once it is sleep (setpriv has exec'd it): kill it when done."""
    proc = user.spawn("sleep", "1000")
    comm = lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip()
    if settled(comm, "sleep") != "sleep":
        proc.kill()
        proc.wait()
        raise AssertionError(f"{user.name}'s sleep did not start")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def _shows(rows: list[dict], proc: subprocess.Popen, user) -> bool:
    """Whether task lines show user's process proc, as sleep."""
    return any(r["tgid"] == r["pid"] == proc.pid and r["uid"] == user.uid and r["comm"] == "sleep" for r in rows)


def _root_errno(target: str | None) -> int:
    """What root's read gives: the errno this kernel refuses target's programs with, or 0
    (bpf_map_elem is served through bpf_map where its own programs are refused)."""
    if target is None:
        return 0
    refusal = kernel_refusal(target)
    if refusal and target == "bpf_map_elem":
        return kernel_refusal("bpf_map")
    return refusal


def _privileged_files(bpffs: Path) -> dict[str, str | None]:
    """The files an unprivileged reader may not read (maps the test made where they name one),
    each with its target (None: .iterfs/status)."""
    kernel = kernel_targets()
    files = {"bpf_map/all": "bpf_map", "bpf_prog/all": "bpf_prog", "bpf_link/all": "bpf_link",
             f"bpf_map_elem/map_id={make_map(bpffs)}": "bpf_map_elem", "kmem_cache/all": "kmem_cache",
             "task/fields=pid,comm/all": "task", ".iterfs/status": None}
    if "sockmap" in kernel:
        files[f"sockmap/map_id={make_map(bpffs, 'sockmap', 4, 8, 4)}"] = "sockmap"
    if "bpf_sk_storage_map" in kernel:
        files[f"bpf_sk_storage_map/map_id={make_sk_storage_map(bpffs)}"] = "bpf_sk_storage_map"
    if "dmabuf" in kernel:
        files["dmabuf/all"] = "dmabuf"
    return files


def test_an_unprivileged_reader_gets_eacces_where_the_kernels_view_needs_privilege_and_root_reads(
        shared, users, bpffs):
    """EACCES for U before and after root has read the same files (no entry root looked up
    lets U in); root reads them, or gets the kernel's refusal of the target."""
    user = users[0]
    files = _privileged_files(bpffs)
    for name in files:
        assert user.read(shared / name) == (errno.EACCES, b""), name
    for name, target in files.items():
        code, text = _read(shared / name)
        assert code == _root_errno(target), (name, os.strerror(code), text[:200])
    for name in files:
        assert user.read(shared / name) == (errno.EACCES, b""), name
    if _root_errno("bpf_map"):
        return
    map_id = int(next(name for name in files if name.startswith("bpf_map_elem/")).split("=")[1])
    ours = {int(line.split()[0]): line.split() for line in shared.read("bpf_map/all").splitlines()[1:]}
    info = next(info for info in bpftool_json("map", "list") if info["id"] == map_id)
    assert map_id in ours and (ours[map_id][2], ours[map_id][3]) == (info["type"], info["name"])


# os.stat() as the user, of each path given: 0 or the errno, one a line
_STAT_AS = """
import os, sys
for path in sys.argv[1:]:
    try:
        os.stat(path)
        print(0)
    except OSError as e:
        print(e.errno)
"""


def _stat_errno(path) -> int:
    """0 if root's os.stat() of path succeeds, else its errno."""
    try:
        os.stat(path)
        return 0
    except OSError as e:
        return e.errno


def test_an_entry_root_looked_up_is_no_shortcut_for_an_unprivileged_reader(shared, users, bpffs):
    """Right after root's stat of a map's bpf_map_elem files (its own and a fields= list's), U's stat
    of them is EACCES, ten times over: the kernel caches such an entry for no one. Root's stat is
    what root's read of the target gives: it succeeds also where the kernel refuses bpf_map_elem's
    programs, for the lookup is served through bpf_map."""
    user = users[0]
    map_id = make_map(bpffs)
    paths = [shared / f"bpf_map_elem/map_id={map_id}",
             shared / f"bpf_map_elem/fields=map.id,map.max_entries/map_id={map_id}"]
    expected = _root_errno("bpf_map_elem")
    for attempt in range(10):
        assert [_stat_errno(path) for path in paths] == [expected] * len(paths), attempt
        done = user.run("python3", "-I", "-S", "-c", _STAT_AS, *(str(path) for path in paths))
        assert done.returncode == 0, done.stderr.decode()
        assert [int(code) for code in done.stdout.split()] == [errno.EACCES] * len(paths), attempt


def test_modes_and_listings_say_what_an_unprivileged_reader_may_read(shared, users, bpffs):
    """0400 where only privileged readers get a view, 0444 where every reader gets its own;
    ls lists every target to U, and no map_id= files."""
    user = users[0]
    map_id = make_map(bpffs)
    private = ["kmem_cache/all", "bpf_map/all", "task/fields=pid/all", ".iterfs/status"]
    public = ["task/all", "tcp/all", "ksym/all", "task_file/all", "task/README", "bpf_map/README",
              "kmem_cache/README", "task/fields=pid/README"]
    modes = _modes_as(user, [shared / name for name in private + public])
    assert {name: modes[str(shared / name)] for name in private} == {name: 0o400 for name in private}
    assert {name: modes[str(shared / name)] for name in public} == {name: 0o444 for name in public}
    assert _ls(str(shared.path), user=user) == _ls(str(shared.path))
    theirs, mine = _ls(str(shared / "bpf_map_elem"), user=user), _ls(str(shared / "bpf_map_elem"))
    assert f"map_id={map_id}" in mine and "README" in theirs
    assert theirs == [name for name in mine if not name.startswith("map_id=")]
    done = user.run("stat", str(shared / f"bpf_map_elem/map_id={map_id}"))  # nor may U look one up
    assert done.returncode and b"Permission denied" in done.stderr, done.stderr


def test_status_counts_the_denials_by_target_and_says_the_mount_is_shared(shared, users, bpffs):
    """.iterfs/status, as root: "denials" grows by at least the denials the test made, per target."""
    user = users[1]
    map_id = make_map(bpffs)
    denied = {"bpf_map": ["bpf_map/all", "bpf_map/all"], "bpf_prog": ["bpf_prog/all"],
              "kmem_cache": ["kmem_cache/all"], "bpf_map_elem": [f"bpf_map_elem/map_id={map_id}"],
              "task": ["task/fields=pid/all"], ".iterfs": [".iterfs/status", ".iterfs/status"]}
    before = json.loads(shared.read(".iterfs/status"))
    for names in denied.values():
        for name in names:
            assert user.read(shared / name)[0] == errno.EACCES, name
    after = json.loads(shared.read(".iterfs/status"))
    assert before["shared"] is True and after["shared"] is True
    grown = {target: after["denials"].get(target, 0) - before["denials"].get(target, 0) for target in denied}
    assert all(grown[target] >= len(names) for target, names in denied.items()), (grown, after["denials"])
    said = run_iterfs("status", str(shared.path)).stdout
    line = next(line for line in said.splitlines() if line.startswith("shared with every user"))
    counts = dict(item.rsplit(" ", 1) for item in line.split("denials: ", 1)[1].split(", "))
    assert all(int(counts[target]) >= after["denials"][target] for target in denied), line


def test_a_private_mount_is_refused_by_the_kernel_to_every_other_user(users, fuse_host):
    """Without --allow-other the kernel lets no one but root in: EACCES before iterfs is asked."""
    user = users[0]
    directory = world_traversable_dir()
    try:
        mnt = start_mount(directory)
        try:
            assert _listed_as(user, mnt.path) == (errno.EACCES, [])
            assert user.read(mnt / "task/all") == (errno.EACCES, b"")
            assert {"task", "pinned", ".iterfs"} <= set(os.listdir(mnt.path))
            assert os.getpid() in {row["tgid"] for row in task_lines(mnt.read("task/all"))}
            status = json.loads(mnt.read(".iterfs/status"))
            assert status["shared"] is False and status["denials"] == {}  # the daemon was never asked
        finally:
            mnt.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_bpffs(fuse_host):
    """A directory others may pass through, with a bpffs of the test's own mounted at DIR/bpffs."""
    directory = world_traversable_dir()
    path = directory / "bpffs"
    path.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pin_mount(own_bpffs):
    """A shared mount beside own_bpffs, mirroring only it."""
    mnt = start_mount(own_bpffs.parent, ["--allow-other", "--bpffs", str(own_bpffs), "--debug"])
    yield mnt
    mnt.stop()


def test_pinned_shows_a_reader_what_bpffs_itself_lets_it_open_and_list(pin_mount, own_bpffs, users):
    """For each mode of the pin and of its directory: U's read of pinned/<path> gives what U's read
    of the pin gives, and U's ls of the mirrored directory what U's ls of the bpffs directory gives."""
    user = users[0]
    directory = own_bpffs / "iters"
    directory.mkdir()
    pin = directory / "tasks"
    done = run_iterfs("pin", "task/all", str(pin))
    assert done.returncode == 0, done.stderr
    mirror = pin_mount / "pinned" / str(directory).lstrip("/")
    sleeper = _sleeper(user)
    try:
        for directory_mode in (0o700, 0o755):
            for pin_mode in (0o600, 0o644):
                os.chmod(directory, directory_mode)
                os.chmod(pin, pin_mode)
                case = f"directory {directory_mode:o}, pin {pin_mode:o}"
                direct, through = user.read(pin), user.read(mirror / "tasks")
                opens = (directory_mode, pin_mode) == (0o755, 0o644)
                assert direct[0] == (0 if opens else errno.EACCES), case  # the kernel's own answer
                assert through[0] == direct[0], case
                # what the pin's link is (target, link and program ids) is told as open(2) of it would
                xattr = user.run("python3", "-I", "-S", "-c", _LINK_ID, str(mirror / "tasks"))
                assert (xattr.returncode == 0) == opens, (case, xattr.stderr)
                if opens:
                    ours, theirs = through[1].decode(), direct[1].decode()
                    assert ours.splitlines()[0] == theirs.splitlines()[0], case
                    assert _shows(task_lines(ours), sleeper, user) and _shows(task_lines(theirs), sleeper, user), case
                listed = _listed_as(user, directory)
                assert listed == ((0, ["tasks"]) if directory_mode == 0o755 else (errno.EACCES, [])), case
                assert _listed_as(user, mirror) == listed, case
                code, text = _read(mirror / "tasks")  # root may, whatever the modes
                assert code == 0 and _shows(task_lines(text.decode()), sleeper, user), case
    finally:
        _stop(sleeper)


_LINK_ID = "import os, sys; print(os.getxattr(sys.argv[1], 'user.iterfs.link_id').decode())"

VIEW = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
char _license[] SEC("license") = "GPL";
RULE

SEC("iter/task")
int NAME(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task && task->tgid == task->pid)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%d %u %s\n", task->tgid, BPF_CORE_READ(task, cred, uid.val),
			       task->comm);
	return 0;
}
"""

# a ptrace rule declared without the reader_policy map (bpf/reader.bpf.h) to apply it with
UNPOLICED_TASK_FILE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
char rule[] SEC(".iterfs.rule") = "task_file";

SEC("iter/task_file")
int unpoliced_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;

	if (task && ctx->file)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%d %u\n", task->tgid, ctx->fd);
	return 0;
}
"""


@pytest.fixture
def views_mount(tmp_path, fuse_host):
    """A shared mount serving three views: task's rule declared, nothing declared, and task_file's
    rule declared by an object that cannot apply it."""
    objects = tmp_path / "objects"
    objects.mkdir()
    os.chmod(objects, 0o755)
    compile_bpf(VIEW.replace("RULE", 'char rule[] SEC(".iterfs.rule") = "task";').replace("NAME", "declared_tasks"),
                objects / "declared.bpf.o")
    compile_bpf(VIEW.replace("RULE", "").replace("NAME", "undeclared_tasks"), objects / "undeclared.bpf.o")
    compile_bpf(UNPOLICED_TASK_FILE, objects / "unpoliced.bpf.o")
    directory = world_traversable_dir()
    try:
        mnt = start_mount(directory, ["--allow-other", "--objects", str(objects), "--debug"])
        yield mnt
        mnt.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_view_is_privileged_unless_its_object_declares_a_rule_it_can_be_served_under(views_mount, users):
    """An undeclared view: EACCES and 0400 for U; one declaring task's rule: 0444, and U reads it;
    one declaring task_file's without the policy map: an error in the log, and privileged only."""
    user = users[0]
    declared, undeclared = views_mount / "task/declared_tasks/all", views_mount / "task/undeclared_tasks/all"
    unpoliced = views_mount / "task_file/unpoliced_files/all"
    sleeper = _sleeper(user)
    try:
        assert user.read(undeclared) == (errno.EACCES, b"")
        assert user.read(unpoliced) == (errno.EACCES, b"")
        code, text = user.read(declared)
        assert code == 0 and f"{sleeper.pid} {user.uid} sleep" in text.decode().splitlines()
        assert _modes_as(user, [declared, undeclared, unpoliced]) == {
            str(declared): 0o444, str(undeclared): 0o400, str(unpoliced): 0o400}
        for path in (declared, undeclared, unpoliced):  # root reads them all
            assert _read(path)[0] == 0, path
        assert f"{sleeper.pid} {user.uid} sleep" in views_mount.read("task/undeclared_tasks/all").splitlines()
    finally:
        _stop(sleeper)
    said = [line for line in views_mount.log.read_text().splitlines()
            if " ERROR " in line and "unpoliced.bpf.o" in line]
    assert any("declares the rule of 'task_file'" in line and "reader_policy" in line
               and "privileged readers only" in line for line in said), said


def _thread_status() -> dict[str, list[str]]:
    """The calling thread's credentials, as /proc/thread-self/status shows them."""
    fields = {}
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd"):
            fields[key] = value.split()
    return fields


@pytest.mark.bpf
@pytest.mark.parametrize("extra", [0, 1 << CAP_BPF], ids=["no-extra-caps", "CAP_BPF"])
def test_assumed_credentials_are_the_calling_threads_alone_and_are_given_back(users, extra):
    """A thread in assumed(creds of U's process) has U's fsuid, fsgid, groups and no capability but
    extra, while the main thread keeps its own; /proc/slabinfo is EACCES there; afterwards the
    thread is the daemon's again."""
    user = users[1]
    sleeper = _sleeper(user)
    try:
        creds = credentials.of_thread(sleeper.pid, user.uid, user.gid)
        theirs = {key: value.split() for key, value in
                  (line.split(":", 1) for line in Path(f"/proc/{sleeper.pid}/status").read_text().splitlines())}
    finally:
        _stop(sleeper)
    assert creds.uids == (user.uid,) * 3 and creds.gids == (user.gid,) * 3
    main_before = _thread_status()
    seen: dict = {}
    inside, looked = threading.Event(), threading.Event()

    def work() -> None:
        try:
            seen["before"] = _thread_status()
            with credentials.assumed(creds, extra):
                seen["inside"] = _thread_status()
                try:
                    open("/proc/slabinfo", "rb").close()
                    seen["slabinfo"] = "read"
                except PermissionError:
                    seen["slabinfo"] = "EACCES"
                inside.set()
                looked.wait(120)
            seen["after"] = _thread_status()
        except BaseException as e:
            seen["error"] = e
        finally:
            inside.set()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert inside.wait(120)
        main_during = _thread_status()  # while the worker holds U's credentials
    finally:
        looked.set()
        worker.join(120)
    assert not worker.is_alive() and "error" not in seen, seen.get("error")
    during = seen["inside"]
    # the filesystem ids are U's; real, effective and saved ones stay the daemon's, so that U
    # cannot signal the thread meanwhile (credentials.py)
    assert during["Uid"][3] == theirs["Uid"][3] and during["Gid"][3] == theirs["Gid"][3]
    assert during["Uid"][:3] == seen["before"]["Uid"][:3] and during["Gid"][:3] == seen["before"]["Gid"][:3]
    assert during["Groups"] == theirs["Groups"]
    assert int(during["CapEff"][0], 16) == int(theirs["CapEff"][0], 16) | extra == extra
    assert seen["slabinfo"] == "EACCES"
    assert main_during == main_before == seen["before"]
    assert seen["after"] == seen["before"]
