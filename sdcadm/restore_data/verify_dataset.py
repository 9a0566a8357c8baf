"""A dataset copy against its manifest entry: every file (sha256 and size)
and every symlink the manifest lists is there, unchanged, and nothing else is.

Shared by `restore-data verify` (on a scratch clone) and by seeding (on the
clone a restored instance will run on), so that what verify calls BROKEN is
never restored. The tree is read by ``datasets/tree.py``'s ``scan_tree``, the
one walker and hasher.
"""

from sdcadm.datasets.digest import WHOLE_FILE
from sdcadm.datasets.tree import scan_tree


def algorithm_of(dataset):
    """The digest a manifest's dataset entry names its files by."""
    return dataset.get("digest", WHOLE_FILE)


def check_dataset(path, dataset):
    """(Tree, problems) of the copy at ``path`` against ``dataset`` (the
    manifest's entry: ``files`` {rel: {"sha256", "bytes"}}, ``links`` {rel:
    target}, ``digest`` the files' digest). Each problem is one line naming
    the file. Every file is read: a copy changed in place keeps its inode,
    size and even its mtime."""
    tree = scan_tree(path, algorithm=algorithm_of(dataset))
    return tree, list(tree.problems) + tree_problems(tree, dataset)


def tree_problems(tree, dataset):
    problems = []
    for rel, want in sorted(dataset["files"].items()):
        got = tree.files.get(rel)
        if got is None:
            kind = "not a regular file" if rel in tree.links else "missing"
            problems.append(f"{kind}: {rel}")
        elif got != want:
            problems.append(f"changed: {rel} (sha256 {got['sha256'][:12]}…, {got['bytes']} "
                            f"bytes; manifest: {want['sha256'][:12]}…, {want['bytes']} bytes)")
    for rel in sorted(set(tree.files) - set(dataset["files"])):
        problems.append(f"extra: {rel}")
    for rel, want_target in sorted(dataset["links"].items()):
        if rel not in tree.links:
            problems.append(f"missing: {rel} (link -> {want_target})")
        elif tree.links[rel] != want_target:
            problems.append(f"changed: {rel} (link -> {tree.links[rel]}, "
                            f"manifest: -> {want_target})")
    for rel in sorted(set(tree.links) - set(dataset["links"])):
        problems.append(f"extra: {rel} (link -> {tree.links[rel]})")
    return problems
