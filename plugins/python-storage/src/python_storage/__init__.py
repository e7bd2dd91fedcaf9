"""python-storage: a Wukong storage backend written in Python (componentize-py).

One claim per disk on any storage class: a CDI DataVolume for an image disk, a
PersistentVolumeClaim for a blank one, an existing claim used as is; bound and import
progress read back from status; disks grow and never shrink; finalize removes the
claims of unretained disks. The same behaviour as the Rust `cdi-storage` plugin.
"""

NAME = "python-storage"
VERSION = "0.1.0"
