"""Pure layers: parameter names, object introspection, BTF discovery, the tree's inodes."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from iterfs import params, probes
from iterfs.catalog import BUNDLED_DIR, Catalog
from iterfs.errors import NotFound
from iterfs.objects import ObjectError, read_object
from iterfs.tree import README, Kind, Tree

TASK_TARGETS = ("task", "task_file", "task_vma")


# parameters


@pytest.mark.parametrize("target", TASK_TARGETS)
def test_all_has_no_link_info(target):
    p = params.parse(target, "all")
    assert p.name == "all"
    with probes.link_info(params.schema_for(target), p) as info:
        assert info is None


@functools.lru_cache(maxsize=1)
def vmlinux_btf() -> str:
    """bpftool's raw dump of the kernel's BTF: the ground truth for what the kernel defines."""
    return subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.bpf
def test_link_info_has_the_kernels_size():
    out = vmlinux_btf()
    size = int(re.search(r"UNION 'bpf_iter_link_info' size=(\d+)", out).group(1))
    assert size == params.LINK_INFO_SIZE
    with probes.link_info(params.schema_for("task_vma"), params.parse("task_vma", "pid=42")) as info:
        assert len(info) == size


@pytest.mark.parametrize(
    "name, why",
    [
        ("pid=", "positive decimal"),
        ("pid=abc", "positive decimal"),
        ("pid=0", "positive decimal"),
        ("pid=-1", "positive decimal"),
        ("pid=042", "positive decimal"),
        ("pid=4294967296", "positive decimal"),
        ("pid=1,tid=1", "exclude"),
        ("pid=1,pid=2", "twice"),
        ("cgroup=1", "unknown parameter"),
        ("pid", "not key=value"),
        ("", "not key=value"),
        ("ALL", "not key=value"),
    ],
)
def test_malformed_names_say_why(name, why):
    with pytest.raises(params.ParamError, match=why):
        params.parse("task", name)


def test_target_without_schema_takes_only_all():
    assert params.parse("ksym", "all").values == ()
    with pytest.raises(params.ParamError, match="takes no parameters"):
        params.parse("ksym", "pid=1")


def test_from_kwargs_builds_the_canonical_name():
    assert params.from_kwargs("task", {"pid": 5}).name == "pid=5"
    assert params.from_kwargs("task", {}).name == "all"
    with pytest.raises(params.ParamError):
        params.from_kwargs("task", {"nope": 1})


def test_check_knows_processes_from_threads(child):
    tid = child.start_threads(["worker"])[0]
    probes.check(params.schema_for("task"), params.parse("task", f"pid={child.pid}"))
    probes.check(params.schema_for("task"), params.parse("task", f"tid={tid}"))
    with pytest.raises(params.ParamError, match="thread of process"):
        probes.check(params.schema_for("task"), params.parse("task", f"pid={tid}"))
    child.proc.kill()
    child.proc.wait()
    with pytest.raises(params.ParamError, match="no process"):
        probes.check(params.schema_for("task"), params.parse("task", f"pid={child.pid}"))


# object introspection, against llvm-readelf's view of the same files


def _readelf_iter_programs(path: Path) -> set[tuple[str, str]]:
    readelf = shutil.which("llvm-readelf") or pytest.fail("llvm-readelf (package llvm) is needed")
    sections = {}
    out = subprocess.run([readelf, "-S", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    for m in re.finditer(r"\[\s*(\d+)\]\s+(\S+)", out):
        sections[m.group(1)] = m.group(2)
    programs = set()
    out = subprocess.run([readelf, "-s", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[3] == "FUNC" and fields[4] == "GLOBAL":
            section = sections.get(fields[6], "")
            if section.startswith("iter/"):
                programs.add((fields[7], section[len("iter/"):]))
    return programs


def test_bundled_objects_list_what_readelf_shows():
    objects = sorted(BUNDLED_DIR.glob("*.bpf.o"))
    assert objects, "no bundled objects: run make"
    for path in objects:
        obj = read_object(path)
        assert {(p.name, p.target) for p in obj.programs} == _readelf_iter_programs(path)
        assert obj.license == "GPL"


def test_non_elf_and_non_bpf_files_are_refused(tmp_path):
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an object")
    with pytest.raises(ObjectError, match="not an ELF"):
        read_object(junk)
    with pytest.raises(ObjectError, match="not a BPF object"):
        read_object(Path(shutil.which("true")))
    with pytest.raises(ObjectError):
        read_object(tmp_path / "absent.bpf.o")


# kernel discovery, against bpftool's dump of the same BTF


@pytest.mark.bpf
def test_kernel_targets_match_bpftool():
    from iterfs.discovery import kernel_targets

    out = vmlinux_btf()
    expected = {m for m in re.findall(r"STRUCT 'bpf_iter__(\w+)'", out) if "__" not in m}
    assert set(kernel_targets()) >= expected
    assert set(TASK_TARGETS) <= expected


# the tree


@pytest.mark.bpf
def test_parameter_nodes_live_while_the_kernel_remembers_them(child):
    tree = Tree(Catalog())
    task = tree.lookup(tree.root, "task")
    assert {README, "all"} <= set(task.children)
    before = tree.size
    node = tree.lookup(task, f"pid={child.pid}")
    assert node.kind is Kind.ITER and node.params.name == f"pid={child.pid}"
    assert tree.lookup(task, f"pid={child.pid}") is node  # one name, one inode
    tree.remember(node)
    tree.remember(node)
    tree.forget(node.inode, 1)
    assert tree.node(node.inode) is node
    tree.forget(node.inode, 1)
    with pytest.raises(NotFound):
        tree.node(node.inode)
    assert tree.size == before


@pytest.mark.bpf
def test_listing_shows_live_processes_and_any_name_can_be_looked_up(child):
    tree = Tree(Catalog())
    task = tree.lookup(tree.root, "task_file")
    names = tree.listing(task)
    assert names[:2] == [README, "all"] or set(names[:2]) == {README, "all"}
    assert f"pid={child.pid}" in names and f"pid={os.getpid()}" in names
    assert all(n in (README, "all", "FIELDS") or re.fullmatch(r"pid=[1-9]\d*", n) for n in names)
    tid = child.start_threads(["lookup"])[0]
    assert f"pid={tid}" not in names
    assert tree.lookup(task, f"tid={tid}").params.values == (("tid", tid),)
    with pytest.raises(NotFound):
        tree.lookup(tree.root, "no_such_target")


@pytest.mark.bpf
def test_concurrent_lookups_of_one_name_share_a_node(child):
    tree = Tree(Catalog())
    task = tree.lookup(tree.root, "task")
    found = []
    threads = [threading.Thread(target=lambda: found.append(tree.lookup(task, f"pid={child.pid}"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(n) for n in found}) == 1


# a kernel that refuses: loads made to fail with EPERM, as such a kernel fails them


@pytest.mark.bpf
def test_a_refused_load_is_raised_fresh_on_every_use_and_tried_once(monkeypatch):
    import errno

    from iterfs import _libbpf
    from iterfs.programs import Programs, Refused

    loads = []

    def refuse(obj):
        loads.append(obj)
        raise _libbpf.LibbpfError(errno.EPERM, "bpf_object__load: Operation not permitted")

    monkeypatch.setattr(_libbpf, "object_load", refuse)
    target = Catalog().targets["task"]
    programs = Programs()
    try:
        raised = []
        for _ in range(3):
            with pytest.raises(Refused) as info:
                programs.prog_fd(target)
            raised.append(info.value)
        assert len(loads) == 1 and all(e.errno == errno.EPERM for e in raised)
        assert len({id(e) for e in raised}) == 3  # a kept exception would grow a traceback per raise
        assert programs.loaded == []
    finally:
        programs.close()


@pytest.mark.bpf
def test_targets_the_probe_is_refused_for_are_marked_or_walked(monkeypatch):
    import errno

    from iterfs import _libbpf, discovery

    refused = {_libbpf.btf_find_func(base, f"bpf_iter_{name}"): name
               for base in [_libbpf.btf_load_vmlinux()] for name in ("sockmap", "bpf_map_elem")}
    real = _libbpf.probe_iter_target

    def probe(btf_id):
        if btf_id in refused:
            raise _libbpf.LibbpfError(errno.EACCES, "bpf_prog_load: Permission denied")
        real(btf_id)

    monkeypatch.setattr(_libbpf, "probe_iter_target", probe)
    assert discovery.refused_targets({"sockmap", "bpf_map_elem", "task"}) == \
        {"sockmap": errno.EACCES, "bpf_map_elem": errno.EACCES}
    catalog = Catalog()
    assert catalog.targets["sockmap"].refused == errno.EACCES
    assert catalog.targets["sockmap"].readme.startswith("sockmap: refused by this kernel (EACCES).")
    walk = catalog.targets["bpf_map_elem"]
    assert walk.refused is None and walk.through == "bpf_map" and walk.object_path.name == "bpf_map_elem_walk.bpf.o"
    assert catalog.targets["task"].refused is None


def test_concurrent_opens_of_one_map_walk_leave_no_load_behind(monkeypatch):
    """Loads made for one map are closed after each open: racing opens must neither leak one
    (it would keep the map alive) nor serve from one that was closed."""
    import random
    import time

    from iterfs import _libbpf, programs as programs_mod
    from iterfs.catalog import Recipe

    lock, opened, closed, loading = threading.Lock(), set(), set(), []
    count = iter(range(1, 10**6))

    def object_open(path):
        with lock:
            obj = next(count)
            opened.add(obj)
        return obj

    def object_close(obj):
        with lock:
            closed.add(obj)

    def program_fd(obj, program):
        with lock:
            assert obj not in closed, "an fd of a closed load was handed out"
        return obj

    monkeypatch.setattr(_libbpf, "object_open", object_open)
    monkeypatch.setattr(_libbpf, "object_close", object_close)
    def object_load(obj):
        with lock:
            loading.append(obj)
            assert len(loading) == 1, "two loads of one key at once"
        time.sleep(random.random() * 0.003)
        with lock:
            loading.remove(obj)

    monkeypatch.setattr(_libbpf, "object_load", object_load)
    monkeypatch.setattr(_libbpf, "object_program_fd", program_fd)
    monkeypatch.setattr(_libbpf, "object_reuse_map", lambda *args: None)
    monkeypatch.setattr(_libbpf, "object_set_initial", lambda *args: None)
    monkeypatch.setattr(_libbpf, "map_get_fd_by_id", lambda map_id: os.dup(0))
    walk = Recipe("bpf_map_elem", Path("walk.bpf.o"), "dump", params.schema_for("bpf_map_elem"), through="bpf_map",
                  maps=(("elems", 7),), global_values=((".rodata", 0, b"\0"),))
    programs = programs_mod.Programs()

    def opens():
        for _ in range(200):
            programs.prog_fd(walk)
            time.sleep(0.0003)
            programs.release(walk)
            time.sleep(random.random() * 0.004)

    failed = []

    def run():
        try:
            opens()
        except AssertionError as e:
            failed.append(e)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed and opened and opened == closed and programs.loaded == []


def test_a_view_of_cgroup_takes_order_as_its_target_spells_it():
    view = params.ViewSchema(params.schema_for("cgroup"), ())
    p = view.parse("id=5,order=self_only")
    assert p.values == (("id", 5), ("order", params.CGROUP_ORDERS["self_only"]))
    assert view.as_text(p) == {"id": "5", "order": "self_only"}
    assert view.pack(view.target_values(p)) == params.schema_for("cgroup").pack({"id": 5, "order": 1})


def test_a_burst_of_view_refreshes_shares_looks(tmp_path, monkeypatch):
    import time

    from iterfs.views import UserObjects

    objects = tmp_path / "objects"
    objects.mkdir(mode=0o755)
    users = UserObjects([objects], frozenset({"task"}))
    looks = []

    def slow_look(self):
        looks.append(1)
        time.sleep(0.05)
        return []

    monkeypatch.setattr(UserObjects, "_all", slow_look)
    threads = [threading.Thread(target=users.refresh) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the first look, and at most one more that began after the others arrived
    assert 1 <= len(looks) <= 2
    before = len(looks)
    users.refresh()  # alone: a look of its own
    assert len(looks) == before + 1
