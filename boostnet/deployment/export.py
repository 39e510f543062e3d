"""Export a run's exit stages (scripts/export.py) and load them back (scripts/predict.py).

An export directory holds one file per exit stage (`stage_<n>.onnx` or `stage_<n>.pt2`), the
run's `exit_policy.json` (thresholds, costs, class names, preprocessing) and `manifest.json`:
format, checkpoint SHA-256, whether the exits are boosted, and per stage its file, SHA-256 and
tensor names (boostnet/deployment/stages.py). Loading checks every digest before reading a file,
and never unpickles: ONNX files are protobuf, and a torch.export archive is refused unless it holds
nothing but what torch.export.save writes for plain tensors (:func:`check_pt2_archive`).
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import re
import shutil
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX, WEIGHT_FILENAME_PREFIX
from tqdm import tqdm

from boostnet.deployment.runner import OnnxStages, StageBackend, TorchStages, stage_outputs
from boostnet.deployment.stages import FlatStage, StageSignature, chained_signatures, flat_stages, signatures
from boostnet.evaluation.early_exit import inference_model
from boostnet.evaluation.policy import POLICY_FILE, ExitPolicy, check_digest, read_policy
from models.boosting import BoostedNetwork
from utils.checkpoint import file_digest
from utils.errors import UserError
from utils.json_files import read_json, write_json

MANIFEST_FILE = "manifest.json"
TENSOR_FILES = (WEIGHT_FILENAME_PREFIX, TENSOR_CONSTANT_FILENAME_PREFIX)  # plain tensor payloads of a .pt2
EXPORT_SCHEMA = "boostnet.export"
EXPORT_VERSION = 1
FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
ONNX_OPSET = 18
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class Export:
    """A loaded export: the stages ready to run and the policy they come with."""

    backend: StageBackend
    policy: ExitPolicy
    format: str


def write_onnx(stage: FlatStage, example: tuple[Tensor, ...], names: StageSignature, path: Path) -> None:
    """Stage as an ONNX graph with a dynamic batch axis on every input."""
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            stage,
            example,
            str(path),
            input_names=names.inputs,
            output_names=names.outputs,
            dynamic_shapes=(tuple({0: batch} for _ in example),),
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,  # else eight progress lines per stage on stdout
        )


def write_torch_export(
    stage: FlatStage, example: tuple[Tensor, ...], names: StageSignature, path: Path
) -> None:
    """Stage as a torch.export program (dynamic batch axis), saved by torch.export.save, holding
    only the weights the stage reads (:func:`without_unread_state`)."""
    dynamic = (tuple({0: torch.export.Dim("batch", min=1)} for _ in example),)
    program = torch.export.export(stage, example, dynamic_shapes=dynamic)
    pruned = without_unread_state(stage, read_state(program))
    torch.export.save(torch.export.export(pruned, example, dynamic_shapes=dynamic), str(path))


def read_state(program: torch.export.ExportedProgram) -> set[str]:
    """Names of the parameters and buffers that `program`'s graph reads."""
    read = {node.name for node in program.graph.nodes if node.op == "placeholder" and node.users}
    return {
        spec.target for spec in program.graph_signature.input_specs if spec.arg.name in read and spec.target
    }


def without_unread_state(stage: FlatStage, read: set[str]) -> FlatStage:
    """`stage` over a copy of its network whose parameters and buffers outside `read` are empty.
    torch.export saves every tensor of the module it exports, and a stage module holds the whole
    network: without this, each of the six stage files of the CIFAR-100 recipe model carries all
    9.7 MB of it."""
    model = copy.deepcopy(stage.model)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if f"model.{name}" not in read:
            owner, _, leaf = name.rpartition(".")
            empty = torch.empty(0, dtype=tensor.dtype)
            if isinstance(tensor, torch.nn.Parameter):
                empty = torch.nn.Parameter(empty, requires_grad=False)
            setattr(model.get_submodule(owner), leaf, empty)  # keeps a buffer's persistence
    return FlatStage(model, stage.n, stage.spec, stage.last).eval()


WRITERS: dict[str, Callable[[FlatStage, tuple[Tensor, ...], StageSignature, Path], None]] = {
    "onnx": write_onnx,
    "torch-export": write_torch_export,
}


def example_images(policy: ExitPolicy, channels: int) -> Tensor:
    """A fixed random batch of the policy's input shape, to trace the stages with."""
    size = policy.preprocessing.image_size
    return torch.randn(EXAMPLE_BATCH, channels, size, size, generator=torch.Generator().manual_seed(0))


def eager_backend(network: BoostedNetwork, policy: ExitPolicy, channels: int) -> TorchStages:
    """The run's own network as stages of flat tensors (the PyTorch backend of a run directory)."""
    stages, _ = flat_stages(network, example_images(policy, channels))
    return TorchStages(stages, network.boosted)


def export_run(network: BoostedNetwork, policy: ExitPolicy, channels: int, form: str, out: Path) -> None:
    """Write the export of `network` (CPU, eval mode) with `policy` to the new directory `out`;
    it is built in a fresh hidden directory beside `out` and renamed at the end, so a failure
    leaves nothing behind and nothing already there is touched."""
    stages, examples = flat_stages(network, example_images(policy, channels))
    out.parent.mkdir(parents=True, exist_ok=True)
    building = out.parent / f".{out.name}.{uuid.uuid4().hex}.partial"
    building.mkdir()  # exclusive, and with the umask's mode (mkdtemp's 0700 would keep readers out)
    try:
        entries = []
        named = list(zip(stages, examples, signatures(network, examples)))
        progress = tqdm(named, desc=f"{form} export", unit="stage", disable=None)  # bar on a terminal only
        for n, (stage, example, names) in enumerate(progress):
            path = building / stage_file_name(n, form)
            WRITERS[form](stage, example, names, path)
            entries.append(
                {
                    "file": path.name,
                    "sha256": file_digest(path),
                    "inputs": names.inputs,
                    "outputs": names.outputs,
                }
            )
        write_json(building / POLICY_FILE, policy.document)
        write_json(building / MANIFEST_FILE, manifest(policy, network.boosted, form, entries))
        building.rename(out)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def manifest(policy: ExitPolicy, boosted: bool, form: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """manifest.json of an export (docs/deployment.md): what loading checks before reading a stage."""
    return {
        "schema": EXPORT_SCHEMA,
        "version": EXPORT_VERSION,
        "format": form,
        "checkpoint_sha256": policy.checkpoint_sha256,
        "num_exits": len(stages),
        "boosted": boosted,
        "policy": POLICY_FILE,
        "stages": stages,
    }


def stage_file_name(n: int, form: str) -> str:
    """The file exit stage n (0-based) is exported to in format `form`."""
    return f"stage_{n}{FORMATS[form]}"


def holds_stages(folder: Path) -> bool:
    """Whether `folder` holds an exported first stage (an export, or one that lost its manifest)."""
    return any((Path(folder) / stage_file_name(0, form)).is_file() for form in FORMATS)


def is_export(path: Path) -> bool:
    """Whether `path` is an export directory (it holds manifest.json)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The export's manifest, checked for schema, version and one stage entry per exit."""
    path = folder / MANIFEST_FILE
    try:
        document = read_json(path)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the export manifest ({error})") from None
    if not isinstance(document, dict) or document.get("schema") != EXPORT_SCHEMA:
        raise UserError(f"{path}: not a BoostNet export manifest")
    if document.get("version") != EXPORT_VERSION or document.get("format") not in FORMATS:
        raise UserError(
            f"{path}: export version {document.get('version')} / format {document.get('format')} unknown"
        )
    stages = document.get("stages")
    if not (
        isinstance(document.get("checkpoint_sha256"), str)
        and isinstance(document.get("boosted"), bool)
        and isinstance(stages, list)
        and stages
        and all(map(is_stage_entry, stages))
    ):
        raise UserError(
            f"{path}: damaged export manifest (it needs checkpoint_sha256, boosted and per stage "
            f"file, sha256, inputs and outputs)"
        )
    chained = chained_signatures([entry["outputs"] for entry in stages], document["boosted"])
    for n, (entry, expected) in enumerate(zip(stages, chained)):
        if (entry["inputs"], entry["outputs"]) != (expected.inputs, expected.outputs):
            raise UserError(
                f"{path}: stage {n} ({entry['file']}) does not read what stage {n - 1} returns "
                f"(stages reordered or mixed from other exports, or a wrong boosted)"
                if n
                else f"{path}: stage 0 ({entry['file']}) does not read the images (stages reordered?)"
            )
    return document


def is_stage_entry(entry: Any) -> bool:
    """Whether a manifest's stage entry has the fields :func:`manifest` writes, of their types."""
    return (
        isinstance(entry, dict)
        and all(isinstance(entry.get(key), str) for key in ("file", "sha256"))
        and all(
            isinstance(entry.get(key), list) and all(isinstance(name, str) for name in entry[key])
            for key in ("inputs", "outputs")
        )
    )


def checked_stage_file(folder: Path, entry: dict[str, Any]) -> Path:
    """The stage file `entry` names, refused in one line when missing or not the file exported."""
    path = folder / Path(entry["file"]).name
    if not path.is_file():
        raise UserError(f"{path}: stage file missing from the export")
    if file_digest(path) != entry["sha256"]:
        raise UserError(f"{path}: damaged or replaced stage file (its SHA-256 is not the one exported)")
    return path


# Every entry torch.export.save writes for one program named "model" holding only tensors; an
# archive with anything else is refused, because torch.export.load unpickles some other entries
# (a legacy `data/weights/model.pt`, custom objects, the pre-2.7 zip layout) with weights_only=False.
PT2_ENTRIES = re.compile(
    r"[^/]+/("
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
    r"|data/weights/model_weights_config\.json|data/constants/model_constants_config\.json"
    r"|data/sample_inputs/model\.pt"
    rf"|data/weights/{WEIGHT_FILENAME_PREFIX}\d+|data/constants/{TENSOR_CONSTANT_FILENAME_PREFIX}\d+"
    r")"
)


def check_pt2_archive(path: Path) -> None:
    """Refuse a torch.export archive that torch.export.load could unpickle anything from: every
    entry must be one torch.export.save writes for plain tensors (:data:`PT2_ENTRIES`), and only
    once (Python's zipfile reads the last of two equal names, torch's loader the first), no payload
    may be marked for pickling, and the sample inputs must load with weights_only=True."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            foreign = [name for name in names if not PT2_ENTRIES.fullmatch(name)]
            if foreign:
                raise UserError(f"{path}: holds {foreign[0]}, which exports never hold; refused")
            if len(set(names)) != len(names):
                twice = next(name for name in names if names.count(name) > 1)
                raise UserError(f"{path}: holds {twice} twice, which exports never do; refused")
            if not any(name.endswith("/models/model.json") for name in names):
                raise UserError(f"{path}: no program (models/model.json) in this torch.export archive")
            for name in names:
                if name.endswith(("weights_config.json", "constants_config.json")):
                    for payload in json.loads(archive.read(name)).get("config", {}).values():
                        if payload.get("use_pickle") or not payload.get("path_name", "").startswith(
                            TENSOR_FILES
                        ):
                            raise UserError(
                                f"{path}: holds pickled objects; refused (exports hold tensors only)"
                            )
                elif name.endswith("/data/sample_inputs/model.pt"):
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except (
        zipfile.BadZipFile,
        OSError,
        ValueError,
        RuntimeError,
        AttributeError,  # a payload config that is not the objects torch.export.save writes
        pickle.UnpicklingError,
    ) as error:
        raise UserError(f"{path}: not a readable torch.export archive ({error})") from None


def onnx_session(path: Path, threads: int) -> object:
    """An ONNX Runtime CPU session of one stage (one-line UserError for a damaged file)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own classes, one per failure kind
        raise UserError(f"{path}: ONNX Runtime cannot load this stage ({short(error)})") from None


def torch_program(path: Path) -> torch.nn.Module:
    """A torch.export stage as a callable module, after :func:`check_pt2_archive`."""
    check_pt2_archive(path)
    try:
        return torch.export.load(str(path)).module()
    except Exception as error:  # torch.export raises many kinds for a damaged archive
        raise UserError(f"{path}: torch.export cannot load this stage ({short(error)})") from None


def load_export(folder: Path, threads: int = 1, policy_file: Path | None = None) -> Export:
    """The stages and policy of an export directory, every digest checked first."""
    folder = Path(folder)
    document = read_manifest(folder)
    policy_path = policy_file or folder / POLICY_FILE
    policy = read_policy(policy_path)
    check_digest(
        policy, policy_path, document["checkpoint_sha256"], f"the export {folder} was made from checkpoint"
    )
    paths = [checked_stage_file(folder, entry) for entry in document["stages"]]
    if len(paths) != policy.num_exits:
        raise UserError(
            f"{folder}: {len(paths)} stages exported, but the policy has {policy.num_exits} exits"
        )
    boosted = document["boosted"]
    if document["format"] == "onnx":
        backend: StageBackend = OnnxStages([onnx_session(path, threads) for path in paths], boosted)
    else:
        backend = TorchStages([torch_program(path) for path in paths], boosted)
    check_chain(backend, policy, folder)
    return Export(backend, policy, document["format"])


def check_chain(backend: StageBackend, policy: ExitPolicy, folder: Path) -> None:
    """Run one blank image of the policy's input shape through every stage before any real input,
    so that a policy that does not fit the export (`--policy`) or stages that do not fit together
    (reordered or mixed from other exports, a wrong `boosted`) are one line, not a failure in the
    middle of the work."""
    prep = policy.preprocessing
    image = np.zeros((1, prep.channels, prep.image_size, prep.image_size), np.float32)
    try:
        backend.run(0, [image])
    except Exception as error:  # each runtime raises its own kinds for mismatched inputs
        raise UserError(
            f"{folder}: stage 0 does not take the policy's input ({prep.channels} channels, "
            f"{prep.image_size}x{prep.image_size}): is the policy this export's? ({short(error)})"
        ) from None
    try:
        outputs = stage_outputs(backend, image)
    except Exception as error:
        raise UserError(
            f"{folder}: the exported stages do not run one after another ({short(error)})"
        ) from None
    wrong = [n for n, output in enumerate(outputs) if output.shape != (1, len(policy.classes))]
    if wrong:
        raise UserError(
            f"{folder}: stage {wrong[0]} gives outputs of shape {tuple(outputs[wrong[0]].shape)}, "
            f"not one score per class of the policy ({len(policy.classes)})"
        )


def short(error: Exception) -> str:
    """An exception's message on one line, at most 200 characters."""
    return " ".join(str(error).split())[:200]


def timing_backends(
    network: BoostedNetwork, policy: ExitPolicy, channels: int, folder: Path, threads: int
) -> dict[str, StageBackend]:
    """The two backends speed is measured on: eager PyTorch on an inference copy (conv+BN folded,
    as the evaluator's real-exit timing uses) and ONNX Runtime on stages exported to `folder`."""
    export_run(network, policy, channels, "onnx", folder)
    return {
        "pytorch": eager_backend(inference_model(network), policy, channels),
        "onnxruntime": load_export(folder, threads).backend,
    }
