"""One recipe per model: the notebooks and ``python -m lecturelib.train`` train exactly the same models.

For every model of ``--list``, the notebook's way (the calls written in its cells, checked to be there) and
the command line's way (:data:`lecturelib.train.MODELS`) must build the same architecture (parameter count and
state-dict keys) with the same hyper-parameters, and one seeded training step must give the same loss.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from lecturelib import captioning as cap
from lecturelib import cascade, localization, patch, sds
from lecturelib import multiscale as ms
from lecturelib import recurrent as rc
from lecturelib import spatial_transformer as stn
from lecturelib import train as T
from lecturelib import transposed as TR
from lecturelib.deconvnet import deconvnet
from lecturelib.detection import DetectionConfig
from lecturelib.fast_rcnn import FastRCNN
from lecturelib.faster_rcnn import FasterRCNN
from lecturelib.fcn import SkipLessonConfig, fcn8s, fcn16s, fcn32s
from lecturelib.maskrcnn import tiny_maskrcnn
from lecturelib.profiles import PROFILES
from lecturelib.rcnn import RCNN
from lecturelib.scenes import NUM_CLASSES
from lecturelib.session import set_seed
from lecturelib.tasks import (
    CaptionTask,
    ClutterTask,
    DetectionTask,
    InstanceTask,
    PatchTask,
    RecurrentTask,
    SemanticTask,
    UpsamplingTask,
)
from lecturelib.training import count_parameters, fit, train_config
from lecturelib.yolo import YOLO

ROOT = Path(__file__).resolve().parents[1]
TINY = PROFILES["quick"].scaled(image_size=32, n_train=32, n_test=4, batch_size=8, epochs=2, width=4)
SEED = 0


@dataclass
class NotebookPath:
    """How a notebook trains one model: its file, the calls its cells must contain, and those calls."""

    notebook: str
    calls: tuple[str, ...]
    recipe: Callable            # profile -> recipe
    build: Callable             # recipe -> model
    task: Callable              # (recipe, train data, seed) -> task
    run: dict                   # the run settings the notebook passes to train_config


def _patch(P):
    return NotebookPath(
        "01_patch_classification.ipynb",
        ("patch.PatchLessonConfig.from_profile(course.profile)", "patch.patch_cnn(cfg.model_config(P))",
         "PatchTask(cfg, (train_images, train_masks), patch_size=P, seed=course.seed)",
         "fit(models[P], task, train_config(cfg, seed=course.seed, progress=False), course.device)"),
        patch.PatchLessonConfig.from_profile, lambda cfg: patch.patch_cnn(cfg.model_config(P)),
        lambda cfg, data, seed: PatchTask(cfg, data, patch_size=P, seed=seed), {})


def _multiscale(builder):
    return NotebookPath(
        "03_multiscale.ipynb",
        ("ms.MultiScaleConfig.from_profile(p)", f"ms.{builder.__name__}(cfg)", "SemanticTask(cfg, (x_train, y_train))",
         "fit(model, task, train_config(cfg, seed=course.seed, amp=course.amp, progress=False), course.device)"),
        lambda p: ms.MultiScaleConfig.from_profile(p), builder, lambda cfg, data, seed: SemanticTask(cfg, data), {})


def _upsampler(call, build):
    return NotebookPath(
        "05_transposed_convolution.ipynb",
        ("T.UpsamplerConfig.from_profile(profile)", call, "UpsamplingTask(recipe, train_high)",
         "fit(model, task, train_config(recipe, seed=course.seed, progress=False), course.device)"),
        lambda p: TR.UpsamplerConfig.from_profile(p), build,
        lambda recipe, data, seed: UpsamplingTask(recipe, data[0]), {})


def _skip(key, builder):
    return NotebookPath(
        "06_skip_connections.ipynb",
        ("recipe = SkipLessonConfig.from_profile(P)", "VGG = recipe.vgg()", key,
         "model = build(NUM_CLASSES, config=VGG)",
         "SemanticTask(recipe, (train_x, train_y), (test_x, test_y))",
         "train_config(recipe, seed=course.seed, amp=course.amp, progress=False, eval_every=0)"),
        lambda p: SkipLessonConfig.from_profile(p), lambda recipe: builder(NUM_CLASSES, config=recipe.vgg()),
        lambda recipe, data, seed: SemanticTask(recipe, data), {"eval_every": 0})


# lesson 08 evaluates the course checkpoints of its three models (trained by the command line with these recipes)
DETECTOR_CALLS = ("det_config = cascade.CascadeConfig.from_profile(profile)",)
CHECKPOINT_CALLS = ('METHODS = {"SDS": "sds", "cascade": "cascade", "Mask R-CNN": "maskrcnn"}',
                    "load_course_model(key, s, device)")

def _detector(builder, name: str, proposals: bool):
    """Lesson 07: the notebook builds each detector from the one recipe and scores the shipped checkpoints."""
    return NotebookPath(
        "07_object_detection.ipynb",
        ("det_config = DetectionConfig.from_profile(profile)", f"{name}(det_config)",
         f"DetectionTask(det_config, train, proposals={proposals})"),
        lambda p: DetectionConfig.from_profile(p), builder,
        lambda cfg, data, seed: DetectionTask(cfg, data, proposals=proposals), {})


NOTEBOOK: dict[str, NotebookPath] = {
    "localizer": NotebookPath(
        "07_object_detection.ipynb",
        ("loc_config = localization.LocalizationConfig.from_profile(course.profile)",
         "loc_model = localization.localizer(loc_config)",
         "localization.LocalizationTask(loc_config, loc_train, loc_test)",
         "fit(loc_model, loc_task, train_config(loc_config, seed=course.seed, progress=False), course.device)"),
        localization.LocalizationConfig.from_profile, localization.localizer,
        lambda cfg, data, seed: localization.LocalizationTask(cfg, data), {}),
    "rcnn": _detector(RCNN, "RCNN", True), "fast_rcnn": _detector(FastRCNN, "FastRCNN", True),
    "faster_rcnn": _detector(FasterRCNN, "FasterRCNN", False), "yolo": _detector(YOLO, "YOLO", False),
    "patch_p10": _patch(10), "patch_p22": _patch(22), "patch_p38": _patch(38),
    "multiscale": _multiscale(ms.multiscale_net),
    "singlescale": _multiscale(ms.single_scale_baseline),
    "recurrent": NotebookPath(
        "04_recurrent_refinement.ipynb",
        ("rc.RefinementConfig.from_profile(p)", "rc.RecurrentRefiner(cfg)", "RecurrentTask(cfg, (x_train, y_train))",
         "fit(model, task, train_config(cfg, seed=course.seed, amp=course.amp, progress=False), course.device)"),
        lambda p: rc.RefinementConfig.from_profile(p), rc.RecurrentRefiner,
        lambda cfg, data, seed: RecurrentTask(cfg, data), {}),
    "onepass": NotebookPath(
        "04_recurrent_refinement.ipynb",
        ("rc.RefinementConfig.from_profile(p)", "rc.single_pass_config(cfg)",
         'course_results(["recurrent", "onepass"])'),
        lambda p: rc.single_pass_config(rc.RefinementConfig.from_profile(p)), rc.RecurrentRefiner,
        lambda cfg, data, seed: RecurrentTask(cfg, data), {}),
    "deconv_k3": _upsampler('"deconv k=3": lambda: T.DeconvUpsampler(recipe.width, kernel_size=3)',
                            lambda r: TR.DeconvUpsampler(r.width, kernel_size=3)),
    "deconv_k4": _upsampler('"deconv k=4": lambda: T.DeconvUpsampler(recipe.width, kernel_size=4)',
                            lambda r: TR.DeconvUpsampler(r.width, kernel_size=4)),
    "resizeconv": _upsampler('"resize-conv": lambda: T.ResizeConvUpsampler(recipe.width)',
                             lambda r: TR.ResizeConvUpsampler(r.width)),
    "fcn32s": _skip('"FCN-32s": fcn32s', fcn32s),
    "fcn16s": _skip('"FCN-16s": fcn16s(NUM_CLASSES, config=VGG)', fcn16s),
    "fcn8s": _skip('"FCN-8s": fcn8s', fcn8s),
    "deconvnet": _skip("dn = deconvnet(NUM_CLASSES, config=VGG)", lambda k, config: deconvnet(k, config=config)),
    "sds": NotebookPath(
        "08_instance_segmentation.ipynb", ("sds_config = sds.SDSConfig.from_profile(profile)",) + CHECKPOINT_CALLS,
        lambda p: sds.SDSConfig.from_profile(p), sds.SDS,
        lambda cfg, data, seed: sds.region_task(cfg, data, seed=seed), {}),
    "cascade": NotebookPath(
        "08_instance_segmentation.ipynb", DETECTOR_CALLS + CHECKPOINT_CALLS,
        lambda p: cascade.CascadeConfig.from_profile(p), cascade.MaskCascade,
        lambda cfg, data, seed: InstanceTask(cfg, data), {}),
    "maskrcnn": NotebookPath(
        "08_instance_segmentation.ipynb", DETECTOR_CALLS + CHECKPOINT_CALLS,
        lambda p: cascade.CascadeConfig.from_profile(p),
        lambda c: tiny_maskrcnn(c.num_classes, c.image_size, c.width, config=c),
        lambda cfg, data, seed: InstanceTask(cfg, data), {}),
    "caption_attention": NotebookPath(
        "09_attention_and_spatial_transformers.ipynb",
        ("cap.CaptionConfig.from_profile(course.profile)", "captioner = cap.attention_captioner(cap_cfg)",
         "CaptionTask(cap_cfg, train_scenes)",
         "fit(captioner, cap_task, train_config(cap_cfg, seed=course.seed, progress=False), course.device)"),
        cap.CaptionConfig.from_profile, cap.attention_captioner, lambda cfg, data, seed: CaptionTask(cfg, data), {}),
    "caption_meanpool": NotebookPath(
        "09_attention_and_spatial_transformers.ipynb",
        ("cap.CaptionConfig.from_profile(course.profile)", "cap.mean_pool_captioner(cap_cfg)",
         'course_results(["caption_attention", "caption_meanpool"])'),
        cap.CaptionConfig.from_profile, cap.mean_pool_captioner, lambda cfg, data, seed: CaptionTask(cfg, data), {}),
    "stn_classifier": NotebookPath(
        "09_attention_and_spatial_transformers.ipynb",
        ("stn.STNConfig.from_profile(course.profile)", "stn_model = stn.stn_classifier(stn_cfg)",
         "ClutterTask(stn_cfg, clutter_train)",
         "fit(stn_model, stn_task, train_config(stn_cfg, seed=course.seed, progress=False), course.device)"),
        stn.STNConfig.from_profile, stn.stn_classifier, lambda cfg, data, seed: ClutterTask(cfg, data), {}),
    "plain_classifier": NotebookPath(
        "09_attention_and_spatial_transformers.ipynb",
        ("stn.STNConfig.from_profile(course.profile)", "stn.plain_classifier(stn_cfg)",
         'course_results(["stn_classifier", "plain_classifier"])'),
        stn.STNConfig.from_profile, stn.plain_classifier, lambda cfg, data, seed: ClutterTask(cfg, data), {}),
}


def _code(notebook: str) -> str:
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_every_command_line_model_has_a_notebook_path():
    assert sorted(NOTEBOOK) == sorted(T.MODELS)


@pytest.mark.parametrize("name", sorted(T.MODELS))
def test_the_notebook_makes_these_calls(name):
    code = _code(NOTEBOOK[name].notebook)
    missing = [call for call in NOTEBOOK[name].calls if call not in code]
    assert not missing, f"{NOTEBOOK[name].notebook} no longer trains {name} as this test expects: {missing}"


@pytest.mark.parametrize("profile", ["quick", "full", "course"])
@pytest.mark.parametrize("name", sorted(T.MODELS))
def test_same_recipe_architecture_and_settings(name, profile):
    prof, nb, spec = PROFILES[profile], NOTEBOOK[name], T.MODELS[name]
    assert nb.recipe(prof) == spec.recipe(prof) == T.recipe_for(name, prof)
    recipe = spec.recipe(prof)
    set_seed(SEED)
    a = nb.build(recipe)
    set_seed(SEED)
    b = spec.build(recipe)
    assert type(a) is type(b) and count_parameters(a) == count_parameters(b) > 0
    assert list(a.state_dict()) == list(b.state_dict())
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), f"{name}: initial {k} differs"
    assert train_config(recipe, seed=SEED, **nb.run).signature() == train_config(recipe, seed=SEED).signature()


@pytest.mark.parametrize("name", sorted(T.MODELS))
def test_one_seeded_step_gives_the_same_loss(name):
    nb, spec = NOTEBOOK[name], T.MODELS[name]
    recipe = T.recipe_for(name, TINY)
    train, test = T.scene_data(spec, TINY)
    losses = []
    for build, make_task in ((nb.build, lambda: nb.task(recipe, train, SEED)),
                             (spec.build, lambda: spec.task(recipe, train, test, SEED))):
        set_seed(SEED)
        model = build(recipe)
        hist = fit(model, make_task(), train_config(recipe, seed=SEED, progress=False, steps=1, eval_every=0),
                   "cpu")
        losses.append(hist.train_loss[0])
    assert losses[0] == losses[1], f"{name}: notebook loss {losses[0]} != command-line loss {losses[1]}"
