"The model beyond the notebook: missing weights, checkpoints, configs, optimizer groups, mixed precision."
import json
import pytest
import torch
from dataclasses import asdict
from cir_unc.model import CIRModel, ModelConfig, ContentStyleCompositor, resnet50_backbone, HFTextEncoder
from cir_unc.losses import info_nce

TINY_ROBERTA = dict(model_type='roberta', vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=40, pad_token_id=1)

def batch(B=4, L=6, side=64, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long); mask[0, L - 2:] = 0
    return torch.randn(B, 3, side, side, generator=g), ids, mask, torch.randn(B, 3, side, side, generator=g)

def test_missing_resnet_weights_names_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        resnet50_backbone('IMAGENET1K_V1', local_files_only=True)
    message = str(info.value)
    assert str(tmp_path/'hub'/'checkpoints'/'resnet50-0676ba61.pth') in message and 'torchvision.models.resnet50' in message

def test_resnet_weights_from_cache(tmp_path, monkeypatch):
    "A file in torch's cache is used (here a random state dict saved where the ImageNet one would be)."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    from torchvision.models import resnet50
    reference = resnet50()
    (tmp_path/'hub'/'checkpoints').mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path/'hub'/'checkpoints'/'resnet50-0676ba61.pth')
    body = resnet50_backbone('IMAGENET1K_V1', local_files_only=True)
    torch.testing.assert_close(body[0].weight, reference.conv1.weight)

def test_unknown_resnet_weights():
    with pytest.raises(ValueError, match='IMAGENET1K_V2'): resnet50_backbone('IMAGENET_V9')

def test_missing_text_encoder(tmp_path):
    with pytest.raises(FileNotFoundError, match='hf download'):
        HFTextEncoder(str(tmp_path/'no-such-model'), local_files_only=True)

def test_missing_roberta_base_offline(tmp_path, monkeypatch):
    "roberta-base by name with no cache and no downloads: the error names the model and how to get it."
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path))
    try: HFTextEncoder('roberta-base', local_files_only=True)
    except FileNotFoundError as e: assert "'roberta-base'" in str(e) and 'hf download roberta-base' in str(e)
    else: pytest.skip('roberta-base is in the local Hugging Face cache')

def test_config_json_round_trip_and_identity():
    config = ModelConfig.paper(image_weights=None, text_config=TINY_ROBERTA)
    back = ModelConfig.from_dict(json.loads(json.dumps(asdict(config))))
    assert back == config and back.diff(config) == {}
    assert ModelConfig.paper().diff(ModelConfig.paper(image_weights=None, local_files_only=True)) == {}
    assert set(ModelConfig.paper().diff(ModelConfig.paper(compositor='gated'))) == {'compositor'}

@pytest.mark.parametrize('compositor', ModelConfig.compositors)
def test_checkpoint_round_trip(tmp_path, compositor):
    torch.manual_seed(0)
    model = CIRModel(ModelConfig.laptop(vocab_size=50, compositor=compositor))
    reference, ids, mask, target = batch()
    model(reference, ids, mask, target)                        # one train-mode pass moves the batch-norm statistics
    torch.save({'config': asdict(model.config), 'model': model.state_dict()}, tmp_path/'last.pt')
    saved = torch.load(tmp_path/'last.pt', weights_only=True)
    other = CIRModel(ModelConfig.from_dict(saved['config']))
    other.load_state_dict(saved['model'])
    model.eval(); other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other.compose(reference, ids, mask), model.compose(reference, ids, mask))
        torch.testing.assert_close(other.encode_target(target), model.encode_target(target))

def test_paper_preset_is_the_released_model():
    "The settings the reference page states for the released code's model."
    c = ModelConfig.paper()
    assert (c.image_encoder, c.image_weights, c.layer4_stride1) == ('resnet50', 'IMAGENET1K_V1', True)
    assert (c.text_encoder, c.text_pooling, c.text_dim) == ('roberta-base', 'first', 512)
    assert (c.compositor, c.heads, c.embed_dim, c.norm_scale) == ('content_style', 8, 512, 4.)
    assert not ModelConfig.paper(layer4_stride1=False).layer4_stride1          # Fashion200k keeps the 7×7 map

def test_compositor_structure_and_detached_style():
    "Two attention blocks with learnable residual weights; the style statistics μ(x), σ(x) carry no gradient."
    torch.manual_seed(0)
    compositor = ContentStyleCompositor(channels=16, text_dim=8, heads=4)
    assert len(compositor.blocks) == 2 and compositor.residual_weights.requires_grad
    with torch.no_grad(): compositor.residual_weights.zero_()                 # content = IN(x): channel mean 0
    x, t = (torch.randn(2, 16, 4, 4) * 3 + 1).requires_grad_(), torch.randn(2, 8)
    channel_mean = compositor(x, t).mean((2, 3))                                # = g_μ(t)·μ(x) + δ_μ(t), μ(x) detached
    grad, = torch.autograd.grad(channel_mean.sum(), x)
    assert grad.abs().max() < 1e-5                                             # with μ(x) not detached it would be g_μ/16 per element

def test_param_groups_partition():
    model = CIRModel(ModelConfig(text_encoder='roberta-base', text_config=TINY_ROBERTA, text_pooling='first'))
    groups = model.param_groups(0.02, text_lr_scale=0.01)
    ids = [id(p) for g in groups for p in g['params']]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    text_ids = {id(p) for p in model.text_encoder.backbone.parameters()}
    assert {id(p) for p in groups[1]['params']} == text_ids and groups[1]['lr'] == pytest.approx(2e-4)
    torch.optim.SGD(groups, lr=0.02, momentum=0.9)             # accepted as optimizer groups

def test_stride1_map_and_head_norm():
    torch.manual_seed(0)
    config = ModelConfig(image_encoder='resnet50', layer4_stride1=True, text_dim=64, embed_dim=32, heads=8, compositor_dim=256)
    model = CIRModel(config).eval()
    reference, ids, mask, _ = batch(B=2, side=96)
    with torch.no_grad():
        assert model.image_encoder(reference).shape == (2, 2048, 6, 6)
        query = model.compose(reference, ids, mask)
    torch.testing.assert_close(query.norm(dim=-1), torch.full((2,), 4.))

def test_bf16_autocast_backward_cpu():
    torch.manual_seed(0)
    model = CIRModel(ModelConfig.laptop(vocab_size=50)).to(memory_format=torch.channels_last)
    reference, ids, mask, target = batch()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        query, target_features = model(reference.contiguous(memory_format=torch.channels_last), ids, mask,
                                       target.contiguous(memory_format=torch.channels_last))
        loss = info_nce(query, target_features)
    loss.backward()
    assert query.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

def test_text_dropout_only_in_training():
    model = CIRModel(ModelConfig.laptop(vocab_size=50, text_dropout=0.5))
    _, ids, mask, _ = batch()
    model.train()
    assert not torch.equal(model.encode_text(ids, mask), model.encode_text(ids, mask))
    model.eval()
    assert torch.equal(model.encode_text(ids, mask), model.encode_text(ids, mask))

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_bf16_channels_last():
    model = CIRModel(ModelConfig.laptop(vocab_size=50)).cuda().to(memory_format=torch.channels_last)
    reference, ids, mask, target = (x.cuda() for x in batch())
    with torch.autocast('cuda', dtype=torch.bfloat16):
        query, target_features = model(reference, ids, mask, target)
        info_nce(query, target_features).backward()
    assert query.dtype == torch.float32
