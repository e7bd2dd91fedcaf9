"""The Python `derived` gives the names the Rust SDK pins (plugins/sdk/src/names.rs,
`PINNED`): run with `python3 -m unittest discover -s plugins/python-storage/tests`. The
isolation cases (`cases/23-derived-names.yaml`) check the same inside the component."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from python_storage import names  # noqa: E402 - after the path is set

# Keep in step with PINNED in plugins/sdk/src/names.rs.
PINNED = [
    ("web", "db-data", "web-db-data-7x5wfd44db"),
    ("web-db", "data", "web-db-data-sohhfprpg7"),
    ("vm1", "root", "vm1-root-egsh6yjvhj"),
    ("tenant-a", "vm1", "tenant-a-vm1-4ydc72xf2k"),
    ("Ünïcode", "Disk_1", "n-code--isk-1-syemzjbeby"),
    (
        "a.very.long.wukong.name.that.goes.on.and.on",
        "some-rather-long-disk-name",
        "a-very-long-wukong-name-that-goes-on-and-on-some-rat-pwcxnjpefe",
    ),
]


class DerivedNames(unittest.TestCase):
    def test_pinned_names_match_the_rust_sdk(self) -> None:
        for owner, item, expected in PINNED:
            self.assertEqual(names.derived(owner, item), expected, f"{owner} / {item}")

    def test_names_are_dns_labels(self) -> None:
        for owner, item in [("x" * 253, "data"), ("..", "--"), ("Ünïcode", "Disk_1")]:
            name = names.derived(owner, item)
            self.assertLessEqual(len(name), names.MAX_LEN)
            self.assertRegex(name, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


if __name__ == "__main__":
    unittest.main()
