"""Prediction with nnU-Net's own predictor that can also write the predicted signed distance maps.

:class:`SDMPredictor` is ``nnUNetPredictor``; without ``save_sdm`` it behaves exactly like it. With
``save_sdm=True`` (``nnunet-sdm predict --save-sdm``):

- one sliding-window pass per fold produces the segmentation logits AND the SDM channels: during the
  pass the network is wrapped so that its output is ``[logits, 64 sdm_1 .. 64 sdm_K]`` (one channel
  per foreground class), and nnU-Net's accumulation buffer is widened by K channels. Gaussian
  weighting, mirroring (test-time augmentation), fold averaging and padding removal therefore apply to
  the SDM channels exactly as to the logits; every channel is accumulated independently, so the logit
  channels -- and the label maps -- are the same as ``nnUNetv2_predict``'s. The factor 64
  (``SDM_LOGIT_SCALE``, a power of two, divided out exactly at export) keeps the SDM out of float16's
  subnormal range where nnU-Net's Gaussian weights are tiny (tile corners): unscaled, the SDM underflows
  to 0 there while the logits do not.
- nothing of nnU-Net is patched: the predictor's own hooks split the result. ``predict_from_data_iterator``
  notes which case is being predicted, ``predict_logits_from_preprocessed_data`` keeps the logit
  channels for nnU-Net's export (label map, optional ``.npz``/``.pkl`` probabilities, in its background
  workers as usual) and writes the SDM channels itself with :func:`export_sdm`, which resamples them
  back to the original image geometry like nnU-Net resamples probabilities (the configuration's
  ``resampling_fn_probabilities``, crop reverted, axes transposed back) in the main process, as each
  case's logits come back, and writes them in the format of :mod:`nnunet_sdm.sdm_format` (files,
  units, ``sdm.json``). nnU-Net's sequential path (``-npp 0 -nps 0``) does not say which case it
  predicts, so ``--save-sdm`` needs ``-npp``/``-nps`` >= 1.

Sign guarantee (SDM-only networks, e.g. ``nnUNetTrainerSDM_Xue2020``, whose logits are ``[0, -64 sdm_1, ...]``):
the accumulated SDM channels ``64 sdm_k`` are then exactly the negated logit channels, bit for bit,
through every step (Gaussian-weighted float16 accumulation, mirroring, fold averaging, linear
resampling: all odd-symmetric, and rounding to nearest is symmetric). So the label map is exactly the
Heaviside of the written SDMs, ``argmax([0, -sdm_1, ..., -sdm_K])`` (ties go to the lower label, as in
nnU-Net's argmax): a voxel labelled c > 0 has ``sdm_c < 0`` and ``sdm_c <= sdm_k`` for all k, a
background voxel has every ``sdm_k >= 0``.
Networks with a separate segmentation head (``nnUNetTrainerSDMDualHead``) give no such guarantee: the
label map comes from the segmentation head, the SDM from the SDM head.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from torch import nn

from nnunet_sdm.checks import check_non_negative
from nnunet_sdm.dataset_json import foreground_labels
from nnunet_sdm.network import SDM_LOGIT_SCALE, sdm_outputs, unwrap
from nnunet_sdm.network.sdm_head import SDMHeadNetwork
from nnunet_sdm.sdm_format import SUPPORTED_WRITERS, sdm_info, sdm_path, write_sdm_image, write_sdm_info
from nnunet_sdm.workflow import register_trainers

__all__ = ["SDMPredictor", "SDMExportError", "export_sdm", "resample_sdm_to_original", "run_predict"]

#: the SDM channels are accumulated as ``SDM_ACCUMULATION_SCALE * sdm`` (see the module docstring)
SDM_ACCUMULATION_SCALE = SDM_LOGIT_SCALE


class SDMExportError(RuntimeError):
    """The model or the dataset's image format cannot give SDM images."""


# ----------------------------------------------------------------------------------------------------
# network wrapper used during the sliding window
# ----------------------------------------------------------------------------------------------------
class _LogitsAndSDM(nn.Module):
    """The SDM network with one output tensor: its usual segmentation logits, then its SDM channels
    times ``SDM_ACCUMULATION_SCALE``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with sdm_outputs(self.network):
            out = self.network(x)
        if isinstance(out, list):  # deep supervision is off in the predictor; be safe anyway
            out = out[0]
        logits = unwrap(self.network).logits(out)
        return torch.cat((logits, SDM_ACCUMULATION_SCALE * out.sdm.to(logits.dtype)), dim=1)


class _WiderLabelManager:
    """A LabelManager whose ``num_segmentation_heads`` includes the SDM channels (sizes nnU-Net's buffer)."""

    def __init__(self, label_manager, extra_channels: int) -> None:
        self._label_manager = label_manager
        self.num_segmentation_heads = label_manager.num_segmentation_heads + extra_channels

    def __getattr__(self, name):
        return getattr(self._label_manager, name)


# ----------------------------------------------------------------------------------------------------
# export of the SDM channels (in the main process, as each case's prediction comes back)
# ----------------------------------------------------------------------------------------------------
def resample_sdm_to_original(
    sdm, properties: dict, configuration_manager, plans_manager, scale: float = 1.0
) -> np.ndarray:
    """SDM (K, *preprocessed shape) -> float32 (K, *original image shape, original axis order).

    The same steps as nnU-Net's probability export: ``resampling_fn_probabilities`` from the
    configuration's spacing to the original spacing, cropping reverted (outside the crop: +1, i.e.
    outside every class), axes transposed back. ``sdm`` may hold ``scale * sdm`` (the predictor's
    accumulated channels): it is resampled as it is, like the logits, and divided by ``scale`` after.
    """
    if isinstance(sdm, torch.Tensor):
        sdm = sdm.cpu().numpy()
    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape_cropped = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = (
        configuration_manager.spacing
        if len(configuration_manager.spacing) == len(shape_cropped)
        else [spacing_transposed[0], *configuration_manager.spacing]
    )
    resampled = configuration_manager.resampling_fn_probabilities(
        sdm, shape_cropped, current_spacing, spacing_transposed
    )
    if isinstance(resampled, torch.Tensor):
        resampled = resampled.cpu().numpy()
    resampled = np.asarray(resampled, dtype=np.float32) / np.float32(scale)
    full = np.ones((resampled.shape[0], *properties["shape_before_cropping"]), dtype=np.float32)
    for c in range(resampled.shape[0]):
        _insert(full[c], resampled[c], properties["bbox_used_for_cropping"])
    return full.transpose([0] + [i + 1 for i in plans_manager.transpose_backward])


def _insert(image: np.ndarray, crop: np.ndarray, bbox) -> None:
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    insert_crop_into_image(image, crop, bbox)


def export_sdm(
    sdm,
    properties: dict,
    configuration_manager,
    plans_manager,
    dataset_json: dict,
    output_file_truncated: str,
    num_threads_torch: int = default_num_processes,
    scale: float = 1.0,
) -> Path:
    """Resample the SDM (K, *preprocessed shape) to the original geometry and write it (``sdm/``)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads_torch)
    try:
        full = resample_sdm_to_original(sdm, properties, configuration_manager, plans_manager, scale)
    finally:
        torch.set_num_threads(old_threads)
    path = sdm_path(output_file_truncated, dataset_json["file_ending"])
    try:
        write_sdm_image(full, path, properties, plans_manager.image_reader_writer_class.__name__)
    except ValueError as error:  # an unsupported writer; the predictor checks it before predicting
        raise SDMExportError(str(error)) from None
    return path


# ----------------------------------------------------------------------------------------------------
# the predictor
# ----------------------------------------------------------------------------------------------------
class SDMPredictor(nnUNetPredictor):
    """``nnUNetPredictor`` that, with ``save_sdm=True``, also writes each case's predicted SDMs."""

    def __init__(self, *args, save_sdm: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.save_sdm = save_sdm
        self._with_sdm_channels = False
        self._current_case: dict | None = None

    # ---- checks ------------------------------------------------------------------------------
    @property
    def trainer_class(self):
        """The class of ``self.trainer_name`` (looked up once, as the predictor found it)."""
        cached = getattr(self, "_trainer_class_cache", None)
        if cached is None or cached.__name__ != self.trainer_name:
            cached = self._trainer_class_cache = _trainer_class(self.trainer_name)
        return cached

    @property
    def sdm_network(self) -> SDMHeadNetwork | None:
        inner = unwrap(self.network) if self.network is not None else None
        if isinstance(inner, SDMHeadNetwork) and inner.num_sdm_channels > 0:
            return inner
        return None

    def check_sdm_export(self) -> None:
        """Raise :class:`SDMExportError` (naming the trainer) unless this model and dataset can give SDMs."""
        if self.network is None:
            raise SDMExportError("initialise the predictor (initialize_from_trained_model_folder) first")
        trainer_class = self.trainer_class
        if not getattr(trainer_class, "has_sdm_head", False) or self.sdm_network is None:
            raise SDMExportError(
                f"--save-sdm: trainer {self.trainer_name} has no SDM head, so there is no SDM to write. "
                "Use a model trained with an SDM trainer of nnunet-sdm (nnUNetTrainerSDM, nnUNetTrainerSDM_Xue2020 "
                "and its variants, nnUNetTrainerSDMDualHead), or predict without --save-sdm."
            )
        heads = self.label_manager.num_segmentation_heads
        regions = self.label_manager.has_regions
        expected = heads if regions else heads - 1  # one SDM per region, or per foreground label
        if self.sdm_network.num_sdm_channels != expected:
            raise SDMExportError(
                f"--save-sdm: trainer {self.trainer_name}: expected one SDM channel per "
                f"{'region' if regions else 'foreground label'} ({expected}), the network has "
                f"{self.sdm_network.num_sdm_channels}"
            )
        writer = self.plans_manager.image_reader_writer_class.__name__
        if writer not in SUPPORTED_WRITERS:
            raise SDMExportError(
                f"--save-sdm: the dataset's images are read with {writer}; SDM images can be written for "
                f"{', '.join(SUPPORTED_WRITERS)} (NIfTI, NRRD, MHA ...) only"
            )

    # ---- sliding window with the SDM channels --------------------------------------------------
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        if not self._with_sdm_channels:
            return super().predict_sliding_window_return_logits(input_image)
        network, label_manager = self.network, self.label_manager
        self.network = _LogitsAndSDM(network)
        self.label_manager = _WiderLabelManager(label_manager, unwrap(network).num_sdm_channels)
        try:
            return super().predict_sliding_window_return_logits(input_image)
        finally:
            self.network, self.label_manager = network, label_manager

    @contextmanager
    def _sdm_mode(self, output) -> Iterator[None]:
        """Inside: the sliding window returns logits + SDM channels and nnU-Net's export writes both."""
        if not self.save_sdm:
            yield
            return
        if output is None:
            raise SDMExportError("save_sdm needs an output folder (or output file names)")
        self.check_sdm_export()
        self._with_sdm_channels = True
        try:
            yield
        finally:
            self._with_sdm_channels = False
            self._current_case = None

    def predict_from_data_iterator(
        self,
        data_iterator,
        save_probabilities: bool = False,
        num_processes_segmentation_export: int = default_num_processes,
    ):
        if not self._with_sdm_channels:
            return super().predict_from_data_iterator(
                data_iterator, save_probabilities, num_processes_segmentation_export
            )

        def noting_the_case(iterator):
            for preprocessed in iterator:
                self._current_case = preprocessed  # nnU-Net predicts each item right after drawing it
                yield preprocessed

        try:
            return super().predict_from_data_iterator(
                noting_the_case(data_iterator), save_probabilities, num_processes_segmentation_export
            )
        finally:
            if hasattr(data_iterator, "_finish"):  # nnU-Net finishes its augmenter only when it sees it
                data_iterator._finish()

    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        """nnU-Net's; with ``save_sdm`` the SDM channels are written here and only the logits returned."""
        predicted = super().predict_logits_from_preprocessed_data(data)
        if not self._with_sdm_channels:
            return predicted
        case = self._current_case
        if case is None or case.get("ofile") is None:
            raise SDMExportError("--save-sdm: no output file for this case (use predict_from_files)")
        heads = self.label_manager.num_segmentation_heads
        export_sdm(
            predicted[heads:].cpu().numpy(),
            case["data_properties"],
            self.configuration_manager,
            self.plans_manager,
            self.dataset_json,
            case["ofile"],
            scale=SDM_ACCUMULATION_SCALE,
        )
        return predicted[:heads]

    def _write_sdm_info(self, output) -> None:
        folder = output if isinstance(output, (str, os.PathLike)) else os.path.dirname(output[0]) or "."
        trainer_class = self.trainer_class
        truncation_mm = getattr(trainer_class, "truncation_mm", None)
        manager = self.label_manager
        if manager.has_regions:
            # one SDM per region, stored under the label value the region is predicted as
            classes = [int(v) for v in manager.regions_class_order]
            names = [k for k in self.dataset_json["labels"] if k not in ("background", "ignore")]
            class_names = dict(zip(classes, names))
        else:
            classes = [int(v) for v in manager.foreground_labels]
            class_names = foreground_labels(self.dataset_json)
        info = sdm_info(
            classes=classes,
            class_names=class_names,
            file_ending=self.dataset_json["file_ending"],
            trainer=self.trainer_name,
            truncation_mm=truncation_mm,
            label_map_is_sdm_heaviside=not getattr(trainer_class, "has_segmentation_head", True),
            tile_step_size=self.tile_step_size,
            use_mirroring=self.use_mirroring,
        )
        write_sdm_info(folder, info)

    # ---- entry points ------------------------------------------------------------------------
    # nnU-Net records its arguments through ``inspect.signature(self.predict_from_files)``: the overrides
    # keep its parameter names exactly.
    def predict_from_files(
        self,
        list_of_lists_or_source_folder,
        output_folder_or_list_of_truncated_output_files,
        save_probabilities: bool = False,
        overwrite: bool = True,
        num_processes_preprocessing: int = default_num_processes,
        num_processes_segmentation_export: int = default_num_processes,
        folder_with_segs_from_prev_stage: str | None = None,
        num_parts: int = 1,
        part_id: int = 0,
    ):
        with self._sdm_mode(output_folder_or_list_of_truncated_output_files):
            if self.save_sdm:
                self._write_sdm_info(output_folder_or_list_of_truncated_output_files)
            return super().predict_from_files(
                list_of_lists_or_source_folder,
                output_folder_or_list_of_truncated_output_files,
                save_probabilities,
                overwrite,
                num_processes_preprocessing,
                num_processes_segmentation_export,
                folder_with_segs_from_prev_stage,
                num_parts,
                part_id,
            )

    def predict_from_files_sequential(
        self,
        list_of_lists_or_source_folder,
        output_folder_or_list_of_truncated_output_files,
        save_probabilities: bool = False,
        overwrite: bool = True,
        folder_with_segs_from_prev_stage: str | None = None,
    ):
        if self.save_sdm:
            raise SDMExportError(
                "--save-sdm needs nnU-Net's background export: use -npp and -nps >= 1 (nnU-Net's sequential "
                "path, -npp 0 -nps 0, does not tell which case it is predicting)"
            )
        return super().predict_from_files_sequential(
            list_of_lists_or_source_folder,
            output_folder_or_list_of_truncated_output_files,
            save_probabilities,
            overwrite,
            folder_with_segs_from_prev_stage,
        )

    def _manage_input_and_output_lists(
        self,
        list_of_lists_or_source_folder,
        output,
        folder_with_segs_from_prev_stage=None,
        overwrite=True,
        part_id=0,
        num_parts=1,
        save_probabilities=False,
    ):
        """nnU-Net's, and with ``save_sdm`` a case counts as done only if its SDM image exists too."""
        if not self.save_sdm or overwrite:
            return super()._manage_input_and_output_lists(
                list_of_lists_or_source_folder,
                output,
                folder_with_segs_from_prev_stage,
                overwrite,
                part_id,
                num_parts,
                save_probabilities,
            )
        inputs, outputs, previous = super()._manage_input_and_output_lists(
            list_of_lists_or_source_folder,
            output,
            folder_with_segs_from_prev_stage,
            True,
            part_id,
            num_parts,
            save_probabilities,
        )
        ending = self.dataset_json["file_ending"]

        def done(truncated: str) -> bool:
            files = [truncated + ending, sdm_path(truncated, ending)] + (
                [truncated + ".npz"] if save_probabilities else []
            )
            return all(os.path.isfile(f) for f in files)

        keep = [i for i, truncated in enumerate(outputs) if not done(truncated)]
        print(f"continue_prediction with --save-sdm: {len(keep)} cases without label map or SDM image")
        return [inputs[i] for i in keep], [outputs[i] for i in keep], [previous[i] for i in keep]


def _trainer_class(trainer_name: str):
    from nnunet_sdm.workflow import trainer_class

    return trainer_class(trainer_name)


# ----------------------------------------------------------------------------------------------------
# command line (``nnunet-sdm predict``; the arguments are nnUNetv2_predict's plus --save-sdm)
# ----------------------------------------------------------------------------------------------------
def run_predict(args) -> int:
    """``nnUNetv2_predict`` (nnU-Net 2.8.1's ``predict_entry_point``) with :class:`SDMPredictor`."""
    import multiprocessing

    from nnunetv2.utilities.file_path_utilities import get_output_folder

    register_trainers()
    folds = [f if f == "all" else int(f) for f in args.f]
    model_folder = get_output_folder(args.d, args.tr, args.p, args.c)
    os.makedirs(args.o, exist_ok=True)
    if args.part_id >= args.num_parts:
        raise SystemExit(f"-part_id ({args.part_id}) must be smaller than -num_parts ({args.num_parts})")
    if args.device == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
        device = torch.device("cpu")
    elif args.device == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        device = torch.device("cuda")
    elif args.device == "mps":
        device = torch.device("mps")
    else:
        raise SystemExit(f"-device must be cpu, cuda or mps, got {args.device}")

    predictor = SDMPredictor(
        tile_step_size=args.step_size,
        use_gaussian=True,
        use_mirroring=not args.disable_tta,
        perform_everything_on_device=not args.not_on_device,
        device=device,
        verbose=args.verbose,
        verbose_preprocessing=args.verbose,
        allow_tqdm=not args.disable_progress_bar,
        save_sdm=args.save_sdm,
    )
    predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint_name=args.chk)
    depth_mm = getattr(args, "sdm_guided_depth", None)
    if depth_mm is not None:
        check_sdm_guided(predictor, depth_mm)  # fail before any work, naming the trainer or setting
        predictor.save_sdm = True
    if predictor.save_sdm:
        predictor.check_sdm_export()  # fail before any work, naming the trainer
    # SDM-guided: nnU-Net's prediction (and its SDMs) go to <o>/unfiltered, the filtered label maps to <o>
    target = os.path.join(args.o, UNFILTERED_FOLDER) if depth_mm is not None else args.o
    common = {
        "save_probabilities": args.save_probabilities,
        "overwrite": not args.continue_prediction,
        "folder_with_segs_from_prev_stage": args.prev_stage_predictions,
    }
    if args.nps == 0 and args.npp == 0:
        predictor.predict_from_files_sequential(args.i, target, **common)
    else:
        predictor.predict_from_files(
            args.i,
            target,
            num_processes_preprocessing=args.npp,
            num_processes_segmentation_export=args.nps,
            num_parts=args.num_parts,
            part_id=args.part_id,
            **common,
        )
    if depth_mm is not None:
        from nnunet_sdm.inference.sdm_guided import apply_to_folder

        removals = apply_to_folder(target, args.o, depth_mm)
        for name in NNUNET_RECORDS:  # the output folder stays what nnU-Net's tools expect of a prediction
            if os.path.isfile(os.path.join(target, name)):
                shutil.copyfile(os.path.join(target, name), os.path.join(args.o, name))
        total = sum(sum(r.values()) for r in removals.values())
        print(
            f"SDM-guided (depth {depth_mm} mm): {total} component(s) removed from {len(removals)} case(s); "
            f"unfiltered prediction and SDMs in {target}"
        )
    return 0


#: where ``--sdm-guided-depth`` keeps nnU-Net's own (unfiltered) prediction and the SDMs, inside ``-o``
UNFILTERED_FOLDER = "unfiltered"
#: the json files nnU-Net writes beside its predictions (``nnUNetv2_apply_postprocessing`` reads them)
NNUNET_RECORDS = ("dataset.json", "plans.json", "predict_from_raw_data_args.json")


def check_sdm_guided(predictor: SDMPredictor, depth_mm: float) -> None:
    """Raise :class:`SDMExportError` unless SDM-guided post-processing can run on this model's output."""
    try:
        check_non_negative("--sdm-guided-depth", depth_mm)
    except (TypeError, ValueError) as error:
        raise SDMExportError(str(error)) from None
    from nnunet_sdm.inference.sdm_guided import has_truncated_sdm

    if not has_truncated_sdm(predictor.trainer_class):
        raise SDMExportError(
            f"--sdm-guided-depth: trainer {predictor.trainer_name} predicts no truncated SDM (no truncation_mm), "
            "so its SDM has no depth in mm; use a model of nnUNetTrainerSDM or one of its variants"
        )
    if predictor.label_manager.has_regions:
        raise SDMExportError(
            "--sdm-guided-depth: this dataset is region-based; SDM-guided post-processing needs one label per "
            "voxel (label datasets only)"
        )
