"""The code location's IO manager: Dagster's pickle-per-partition filesystem IO manager, able to store the
output of a run over several partitions.

A single-run backfill (``BackfillPolicy.single_run()``) runs one step for all its partitions. Dagster's
filesystem IO manager already *loads* several partitions of an input as ``{partition key: value}``, but
refuses to *store* an output covering several partitions. This one takes that same dict shape on the way
out and writes each value to the file a one-partition run of that partition would have written, so
one-partition runs and single-run backfills read and write the same files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager


class _PartitionsPickleIOManager(PickledObjectFilesystemIOManager):
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_partitions or len(context.asset_partition_keys) == 1:
            super().handle_output(context, obj)
            return
        # The same paths load_input reads, one per partition (UPathIOManager's own mapping).
        paths = self._get_paths_for_partitions(context)
        if not isinstance(obj, Mapping) or set(map(str, obj)) != set(map(str, paths)):
            got = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise dg.Failure(
                description=f"the output of {context.asset_key.to_user_string()} covers partitions {sorted(map(str, paths))}: "
                f"it must be a dict with exactly those keys, got {got}"
            )
        values = {str(key): value for key, value in obj.items()}
        for partition, path in paths.items():
            self.make_directory(path.parent)
            self.dump_to_path(context=context, obj=values[str(partition)], path=path)


class PartitionsFilesystemIOManager(dg.FilesystemIOManager):
    """``FilesystemIOManager`` (pickles under ``base_dir``, default the instance's storage directory) that
    also stores a several-partition output given as ``{partition key: value}``."""

    def create_io_manager(self, context: dg.InitResourceContext) -> PickledObjectFilesystemIOManager:
        base_dir = self.base_dir or context.instance.storage_directory()  # type: ignore[union-attr]
        return _PartitionsPickleIOManager(base_dir=base_dir)
