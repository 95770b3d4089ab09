"""Parameter schemas against kernel objects the test makes: maps, cgroups, a target no kernel has."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from helpers import bundled_copy, compile_bpf, make_map, start_mount
from iterfs import params, probes

pytestmark = pytest.mark.bpf


def test_map_targets_take_map_ids_of_fitting_types(bpffs):
    hash_id = make_map(bpffs, "hash")
    array_id = make_map(bpffs, "array")
    for target in ("bpf_map_elem", "bpf_sk_storage_map", "sockmap"):
        with pytest.raises(params.ParamError, match="has no 'all'"):
            params.parse(target, "all")
    p = params.parse("bpf_map_elem", f"map_id={hash_id}")
    probes.check(params.schema_for("bpf_map_elem"), p)
    probes.check(params.schema_for("bpf_map_elem"), params.parse("bpf_map_elem", f"map_id={array_id}"))
    with pytest.raises(params.ParamError, match=f"map {hash_id} is a hash map, this target takes sockmap, sockhash"):
        probes.check(params.schema_for("sockmap"), params.parse("sockmap", f"map_id={hash_id}"))
    with pytest.raises(params.ParamError, match="no BPF map with id 4294967295"):
        probes.check(params.schema_for("bpf_map_elem"), params.parse("bpf_map_elem", "map_id=4294967295"))
    listed = set(probes.listing(params.schema_for("bpf_map_elem")))
    assert {f"map_id={hash_id}", f"map_id={array_id}"} <= listed and "all" not in listed
    assert f"map_id={hash_id}" not in set(probes.listing(params.schema_for("sockmap")))
    with probes.link_info(params.schema_for("bpf_map_elem"), p) as info:
        fd = int.from_bytes(info[:4], "little")
        assert f"map_id:\t{hash_id}" in open(f"/proc/self/fdinfo/{fd}").read()
    with pytest.raises(OSError):
        os.fstat(fd)  # the map fd lives only while the link is made


@pytest.fixture
def cgroup_dir():
    root = Path(probes.cgroup2_root())
    path = root / f"iterfs-test-{uuid.uuid4().hex[:8]}"
    (path / "child").mkdir(parents=True)
    yield path
    (path / "child").rmdir()
    path.rmdir()


def test_cgroup_ids_are_directory_inodes(cgroup_dir):
    parent, child = os.stat(cgroup_dir).st_ino, os.stat(cgroup_dir / "child").st_ino
    assert {parent, child} <= probes.cgroup_ids()
    assert {f"id={parent}", f"id={child}", "all"} <= set(probes.listing(params.schema_for("cgroup")))
    for order in params.CGROUP_ORDERS:
        p = params.parse("cgroup", f"id={child},order={order}")
        probes.check(params.schema_for("cgroup"), p)
    with pytest.raises(params.ParamError, match="is spelled 'id=5,order=self_only'"):
        params.parse("cgroup", "order=self_only,id=5")
    with pytest.raises(params.ParamError, match="not one of"):
        params.parse("cgroup", "id=5,order=sideways")
    with pytest.raises(params.ParamError, match="no cgroup with id"):
        probes.check(params.schema_for("cgroup"), params.parse("cgroup", "id=18446744073709551615"))


BOGUS = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";

/* a target no kernel registers: its context type is declared here */
struct bpf_iter__iterfs_no_such_target { struct bpf_iter_meta *meta; };

SEC("iter/iterfs_no_such_target")
int dump_bogus(struct bpf_iter__iterfs_no_such_target *ctx)
{
	return 0;
}
"""


@pytest.mark.fuse
def test_a_target_the_kernel_lacks_is_absent_from_the_tree(tmp_path, fuse_host):
    programs = bundled_copy(tmp_path)
    compile_bpf(BOGUS, programs / "bogus.bpf.o")
    from iterfs.discovery import kernel_targets

    assert "iterfs_no_such_target" not in kernel_targets()
    mnt = start_mount(tmp_path, ["--bpf-dir", str(programs)])
    try:
        names = set(os.listdir(mnt.path)) - {"pinned", ".iterfs"}
        assert "iterfs_no_such_target" not in names, "a target this kernel lacks must not be served"
        assert names and names <= kernel_targets()
        assert "this kernel has no iterator target 'iterfs_no_such_target'" in mnt.log.read_text()
    finally:
        mnt.stop()


@pytest.mark.fuse
def test_targets_no_program_knows_are_served_by_the_generic_program(tmp_path, fuse_host, child):
    from helpers import proc_threads

    programs = bundled_copy(tmp_path)
    for forgotten in ("task.bpf.o", "ksym.bpf.o"):
        (programs / forgotten).unlink()
    child.start_threads(["g1", "g2"])
    mnt = start_mount(tmp_path, ["--bpf-dir", str(programs)])
    try:
        assert {"task", "ksym"} <= set(os.listdir(mnt.path))
        readme = mnt.read("task/README")
        assert "generic program" in readme and "struct bpf_iter__task" in readme
        lines = mnt.read(f"task/pid={child.pid}").splitlines()
        assert lines[0] == "object"
        assert len(lines[1:]) == len(proc_threads(child.pid))  # one line per thread
        assert all(int(address, 16) > 0 for address in lines[1:])
        assert len(set(lines[1:])) == len(lines[1:])  # each thread its own task_struct
        assert mnt.read("ksym/all").startswith("object\n")
        assert "ksym: no program knows this target, serving it with generic.bpf.o" in mnt.log.read_text()
    finally:
        mnt.stop()
