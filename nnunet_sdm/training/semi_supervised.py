"""Semi-supervised ``nnUNetTrainerSDM_SemiSupervised``: the flagship that also learns from unlabeled images.

Dual-task consistency (Luo et al., AAAI 2021, "Semi-supervised medical image segmentation through
dual-task consistency"): the Heaviside consistency between the segmentation head and the SDM head,
``mean (softmax(seg)_fg - sigmoid(-k sdm))^2``, needs no label, so it can be taken on unlabeled images too.
On LA 2018 with 16 labeled and 64 unlabeled cases it raised Dice from 86.03 to 89.42 and cut 95HD from
17.93 to 7.32 mm (V-Net).

Each training batch holds the plans' batch size of labeled patches (exactly the batches ``nnUNetTrainer``
sees; with a batch seed, the same ones) followed by ``unlabeled_per_labeled`` times as many patches of
unlabeled cases, both with nnU-Net's training augmentation; the unlabeled cases are cropped uniformly.
One forward pass through the flagship's network, one loss, one optimiser step:

    L = DiceCE(seg_l, y) + sdm_weight * (L2 + product)(sdm_l, t)
        + r(epoch) * consistency_weight * mean over labeled AND unlabeled (softmax(seg)_fg - H_k(sdm))^2

so the consistency's gradient reaches the weights in the same step as the supervised terms' (one peer
implementation stepped the optimiser before back-propagating its consistency, which was then lost).
Defaults are DTC's: consistency weight 1 with the sigmoid ramp ``exp(-5 (1 - t)^2)`` of Laine & Aila over
the whole training (DTC: 40 of 40 ramp epochs), and as many unlabeled as labeled patches (DTC: 2 + 2).
Everything else is the flagship's (SDM targets, head, ramp of the SDM gradient into the shared network).

Data: ``imagesUnlabeled`` of the raw dataset, preprocessed by ``nnunet-sdm preprocess-unlabeled``
(:mod:`nnunet_sdm.unlabeled`). Validation and inference are stock: the model predicts with
``nnUNetv2_predict`` like any nnU-Net model.
"""

from __future__ import annotations

import math
import os

import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_sdm.checks import number
from nnunet_sdm.training.base import UnsupportedSetupError
from nnunet_sdm.training.sdm import nnUNetTrainerSDM
from nnunet_sdm.training.seeded_batches import seeded_augmenter
from nnunet_sdm.unlabeled import UNLABELED_IMAGES, preprocessed_unlabeled_folder

#: stream number of the unlabeled batches in the seed entropy (training 0, validation 1)
UNLABELED_STREAM = 2


class UnlabeledDataLoader(nnUNetDataLoader):
    """nnU-Net's loader over unlabeled cases: patches cropped uniformly (no foreground oversampling; under an
    ignore label nnU-Net would look for annotated voxels, which unlabeled cases do not have)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, oversample_foreground_percent=0.0, **kwargs)
        self.has_ignore = False


class LabeledAndUnlabeledBatches:
    """Batches of labeled patches followed by unlabeled ones: ``data`` (B_l + B_u rows), ``target`` of the
    labeled rows only (what the trainer's losses read), ``keys`` of all, ``num_labeled`` = B_l."""

    def __init__(self, labeled, unlabeled) -> None:
        self.labeled = labeled
        self.unlabeled = unlabeled

    def __iter__(self) -> LabeledAndUnlabeledBatches:
        return self

    def __next__(self) -> dict:
        batch, extra = next(self.labeled), next(self.unlabeled)
        return {
            "data": torch.cat([batch["data"], extra["data"]]),
            "target": batch["target"],
            "keys": [*batch["keys"], *extra["keys"]],
            "num_labeled": len(batch["data"]),
        }

    next = __next__

    def finish_unlabeled(self) -> None:
        """Stop the unlabeled augmenter's workers (nnU-Net's ``on_train_end`` stops the labeled one)."""
        if isinstance(self.unlabeled, (NonDetMultiThreadedAugmenter, MultiThreadedAugmenter)):
            self.unlabeled._finish()


def sigmoid_rampup(progress: float) -> float:
    """Laine & Aila's ramp ``exp(-5 (1 - t)^2)`` for ``t`` = progress clipped to [0, 1] (1 at t = 1)."""
    t = min(1.0, max(0.0, progress))
    return math.exp(-5.0 * (1.0 - t) ** 2)


class nnUNetTrainerSDM_SemiSupervised(nnUNetTrainerSDM):
    """The flagship with the Heaviside consistency also on unlabeled patches (dual-task consistency)."""

    #: unlabeled patches per labeled patch in a training batch (labeled: the plans' batch size)
    unlabeled_per_labeled: float = 1.0
    #: DTC's consistency weight (once ramped in)
    consistency_weight: float = 1.0
    #: fraction of the epochs over which the consistency weight follows the sigmoid ramp to full
    consistency_ramp_fraction: float = 1.0

    setting_rules = {
        "unlabeled_per_labeled": number(minimum=0.0, above=True),
        "consistency_ramp_fraction": number(minimum=0.0, maximum=1.0),
    }

    def consistency_ramp(self) -> float:
        ramp_epochs = self.consistency_ramp_fraction * self.num_epochs
        return 1.0 if ramp_epochs <= 0 else sigmoid_rampup(self.current_epoch / ramp_epochs)

    @property
    def unlabeled_batch_size(self) -> int:
        return max(1, round(self.batch_size * self.unlabeled_per_labeled))

    @property
    def unlabeled_folder(self) -> str:
        return str(
            preprocessed_unlabeled_folder(
                self.preprocessed_dataset_folder_base, self.configuration_manager.data_identifier
            )
        )

    def unlabeled_identifiers(self) -> list[str]:
        """The preprocessed unlabeled cases; stops with the command that makes them when there are none."""
        name = type(self).__name__
        folder = self.unlabeled_folder
        if self.is_cascaded:
            raise UnsupportedSetupError(
                f"{name}: configuration {self.configuration_name} is a cascade stage, which needs the previous "
                "stage's segmentation of every case; unlabeled cases have none. Train a full-resolution "
                "configuration (3d_fullres, 2d)."
            )
        identifiers = (
            infer_dataset_class(folder).get_identifiers(folder)
            if os.path.isdir(folder) and os.listdir(folder)
            else []
        )
        if not identifiers:
            dataset = self.plans_manager.dataset_name
            raise UnsupportedSetupError(
                f"{name}: no preprocessed unlabeled cases in {folder}. Put the images in "
                f"nnUNet_raw/{dataset}/{UNLABELED_IMAGES}/ (named as in imagesTr) and run: nnunet-sdm "
                f"preprocess-unlabeled -d {dataset} -c {self.configuration_name} -p {self.plans_manager.plans_name}"
            )
        return identifiers

    def unlabeled_augmenter(self):
        """nnU-Net's training augmentation over the unlabeled cases (seeded when the labeled batches are)."""
        identifiers = self.unlabeled_identifiers()
        folder = self.unlabeled_folder
        dataset = infer_dataset_class(folder)(folder, identifiers)
        rotation, dummy_2d, initial_patch_size, mirror_axes = (
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        )
        manager = self.label_manager
        transforms = self.get_training_transforms(
            self.configuration_manager.patch_size,
            rotation,
            None,  # no deep-supervision targets: unlabeled patches have none to downsample
            mirror_axes,
            dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm,
            is_cascaded=False,
            foreground_labels=manager.foreground_labels,
            regions=manager.foreground_regions if manager.has_regions else None,
            ignore_label=manager.ignore_label,
        )
        loader = UnlabeledDataLoader(
            dataset,
            self.unlabeled_batch_size,
            initial_patch_size,
            self.configuration_manager.patch_size,
            manager,
            transforms=transforms,
        )
        processes = get_allowed_n_proc_DA()
        seed = getattr(self, "batch_seed", None)
        self.print_to_log_file(
            f"semi-supervised: {len(identifiers)} unlabeled cases ({folder}); batches of {self.batch_size} "
            f"labeled + {self.unlabeled_batch_size} unlabeled patches"
        )
        if seed is not None:
            rank = torch.distributed.get_rank() if self.is_ddp else 0
            return seeded_augmenter(
                loader,
                [seed, rank, self.current_epoch, UNLABELED_STREAM],
                processes,
                pin_memory=self.device.type == "cuda",
            )
        if processes == 0:
            return SingleThreadedAugmenter(loader, None)
        return NonDetMultiThreadedAugmenter(
            loader,
            None,
            processes,
            num_cached=max(6, processes // 2),
            seeds=None,
            pin_memory=self.device.type == "cuda",
            wait_time=0.002,
        )

    def on_train_start(self) -> None:
        self.unlabeled_identifiers()  # stop before nnU-Net starts its workers
        super().on_train_start()
        self.dataloader_train = LabeledAndUnlabeledBatches(self.dataloader_train, self.unlabeled_augmenter())

    def on_train_end(self) -> None:
        mixed = self.dataloader_train
        if isinstance(mixed, LabeledAndUnlabeledBatches):
            self.dataloader_train = mixed.labeled  # nnU-Net shuts its own augmenter down
        super().on_train_end()
        if isinstance(mixed, LabeledAndUnlabeledBatches):
            mixed.finish_unlabeled()
