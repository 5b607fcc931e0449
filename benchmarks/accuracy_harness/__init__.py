"""The accuracy benchmark (``python benchmarks/accuracy.py``): several trainers on the same data, split,
fold, seeds and budget; one results table.

A run has five steps; each prints ``==> [seconds] k/5 ...`` and is skipped when its output is already
there, so an interrupted run continues where it stopped when started again with the same arguments:

1. **Data** (:mod:`.data`). The raw dataset is linked (per file, read-only) into ``OUT/nnUNet_raw`` with
   the *training cases only*. The test cases come from ``--test-raw`` (a folder with
   ``imagesTs``/``labelsTs``, or ``imagesTr``/``labelsTr``), or from a fixed list of case identifiers
   (``--test-cases``, or the preset's split file), or else ``--test-fraction`` of the cases drawn with
   ``--seed``; those are moved out of the planned dataset into ``OUT/test/{imagesTs,labelsTs}``, so
   nnU-Net never sees them (not in planning, normalisation statistics, training or validation).
   nnU-Net's own 5-fold split of the training cases (``generate_crossval_split``, seed 12345) and the
   settings that make trainers comparable (cases, split, plans, budget, fold, seed) go into
   ``OUT/benchmark.json``; a rerun with different ones stops with a message instead of mixing results.
2. **Plan and preprocess once** (:func:`.steps.plan`: ``nnUNetv2_plan_and_preprocess -c 3d_fullres``),
   then the plans override (``--plans-override``: a file, a file in ``benchmarks/presets/`` or a bundled
   override such as ``cpu_small``) as plans ``nnUNetPlans_<name>``; ``splits_final.json`` is written, so
   every trainer trains on the cases of ``--fold`` and validates on the rest.
3. **Warm start** (``--warm-start-epochs N`` only): one stock pre-training (``OUT/pretrain``) that every
   trainer and seed is then fine-tuned from (all weights).
4. **Per trainer and seed** (:func:`.steps.run_trainer`): train (``nnunet_sdm.runner.train_with_budget``,
   nnU-Net's own lifecycle, results in nnU-Net's usual folder; one subprocess per training, seeded:
   ``random``, ``numpy``, ``torch``; nnU-Net's data-augmentation workers and cuDNN stay
   non-deterministic; a training interrupted after a ``checkpoint_latest.pth`` continues from it), predict
   the test images with ``nnUNetv2_predict`` (mirroring unless ``--disable-tta``), evaluate them with the
   project's surface metrics (Dice, HD95, ASSD, NSD at 1 and 2 mm) into ``summary_surface.json`` beside the
   predictions. ``--seeds S1 S2 ...``: the first seed in ``OUT``, the others in ``OUT/seed_<s>``.
5. **Compare** (:mod:`.report`): ``results.json`` (settings, timings, per-class mean/sd/n, per-case values,
   ratios, training curves), ``results.md`` (per class and metric mean +- sd for every trainer, best in
   bold; each trainer's HD95 and ASSD over ``nnUNetTrainer``'s; when each trainer's validation pseudo Dice
   reached 0.5; with several seeds the per-seed ratios to stock, paired by seed, with their spread),
   ``results.png`` (violins) and ``training_curves.png``.

A trainer counts as finished when its ``checkpoint_final.pth``, a prediction for every test case and an
up-to-date ``summary_surface.json`` exist; it is then neither trained nor predicted again, and trainers
can be added to a finished run.

Modules, each importing only those above it: :mod:`.settings` (constants, presets, command line,
progress lines), :mod:`.data`, :mod:`.steps` (nnU-Net's steps), :mod:`.report`, :mod:`.run` (the five
steps in order, ``main``).
"""
