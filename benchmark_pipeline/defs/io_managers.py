"""The code location's IO manager: asset outputs (the selected ``trial_info``, benchmark results) as JSON under
a base path that is deployment config, so a run on another machine finds its upstream selection.

Dagster's default IO manager pickles outputs under ``$DAGSTER_HOME/storage`` of the machine that ran the
step; a benchmark run launched elsewhere then failed with ``FileNotFoundError: …/storage/best_trial/bilstm``
(issue #13). Here the base path is a local folder by default (one machine, ``dagster dev``) and any fsspec URL
(``s3://bucket/prefix``, ``gs://…``, through universal_pathlib; the filesystem's package, e.g. ``s3fs``,
installed) or a shared mount in production: ``$BENCHMARK_PIPELINE_IO_BASE_PATH``. See docs/deployment.md for
why an IO manager rather than reading the selection back from materialization metadata.

Files are ``{base_path}/{asset}/{partition}.json`` (a backbone × variant partition: ``…/{backbone}/{variant}.json``),
readable by people and by any language; every output of this project is plain JSON data.

A single-run backfill (``BackfillPolicy.single_run()``) runs one step for all its partitions. Dagster's
``UPathIOManager`` already *loads* several partitions of an input as ``{partition key: value}``, but refuses
to *store* an output covering several partitions; here such an output is given in that same dict shape and
each value goes to the file a one-partition run of that partition writes, so one-partition runs and
single-run backfills read and write the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from benchmark_pipeline.config import PipelineConfig


def default_io_base_path(config: PipelineConfig) -> str:
    """``{root_dir}/outputs/dagster_io/{environment}``: fine on one machine, to be replaced by a shared URL
    when runs are launched on others."""
    return str(config.layout.dagster_io_dir)


class JsonOutputError(TypeError):
    """An asset output that is not JSON data (this IO manager stores JSON only)."""


class JsonUPathIOManager(dg.UPathIOManager):
    extension = ".json"

    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        # Partition keys are safe names (``[A-Za-z0-9._-]``, checked where they are registered); refuse anything
        # that would climb out of the base path anyway.
        if partition.startswith("/") or ".." in partition.split("/"):
            raise ValueError(f"partition key {partition!r} cannot be stored under {base_path}")
        return base_path / partition

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_partitions or len(context.asset_partition_keys) == 1:
            super().handle_output(context, obj)
            return
        # The same paths load_input reads, one per partition (UPathIOManager's own mapping; private in 1.13).
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

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        try:
            text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
        except (TypeError, ValueError) as error:
            raise JsonOutputError(
                f"output of {context.asset_key.to_user_string()} is not JSON data ({error}); it cannot be stored at {path}"
            ) from None
        if path.protocol in ("", "file", "local"):
            # A reader on another machine (a shared mount) must never see half a file.
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text(text, encoding="utf-8")
            os.replace(str(temporary), str(path))
        else:
            path.write_text(text, encoding="utf-8")  # object stores write whole objects

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))


class JsonIOManager(dg.ConfigurableIOManagerFactory):
    """Asset outputs as JSON files under ``base_path`` (a folder, or an fsspec URL such as ``s3://bucket/io``)."""

    base_path: str = Field(
        description="Folder or fsspec URL (s3://, gs://, ...) every machine running steps can read and write."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for the fsspec filesystem (credentials, endpoint)."
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> JsonUPathIOManager:
        return JsonUPathIOManager(base_path=UPath(self.base_path, **self.storage_options))
