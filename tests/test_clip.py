"""CLIP and the pretrained MiniLM beyond the notebook: missing or wrong models, the `from_pretrained` path of a saved
CLIP folder, a training run and its evaluation with CLIP, and all-MiniLM-L6-v2's real weights when the `pretrained`
extra is installed (skipped with the reason otherwise)."""
import json, os
from dataclasses import asdict
import pytest
import torch
from cir_unc.clip import load_clip, save_tiny_clip, minilm_path, TINY_CLIP
from cir_unc.model import CIRModel, ModelConfig
from cir_unc.losses import info_nce

SIZES = dict(train_images=120, val_images=60, test_images=60, train_triplets=96, val_triplets=30, test_triplets=30)

@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp('tiny-clip'))

@pytest.fixture
def offline(monkeypatch, tmp_path):
    "No hub: HF_HUB_OFFLINE and an empty Hugging Face cache."
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path/'hub'))

def test_missing_clip_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as info: load_clip(str(tmp_path/'clip-vit-base-patch16'), local_files_only=True)
    assert 'clip-vit-base-patch16' in str(info.value) and 'hf download' in str(info.value)

def test_missing_clip_by_name_offline(offline):
    try: load_clip('openai/clip-vit-base-patch16', local_files_only=True)
    except FileNotFoundError as e: assert "'openai/clip-vit-base-patch16'" in str(e) and 'hf download openai/clip-vit-base-patch16' in str(e)
    else: pytest.skip('openai/clip-vit-base-patch16 is in the local Hugging Face cache')

def test_not_a_clip_folder(tmp_path):
    from transformers import AutoConfig
    AutoConfig.for_model('bert', vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' model, not a CLIP model"): load_clip(str(tmp_path), local_files_only=True)

def test_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match='feature map'): ModelConfig.clip('openai/clip-vit-base-patch16', compositor='content_style')
    with pytest.raises(ValueError, match='clip_model'): ModelConfig(text_encoder='clip')
    assert ModelConfig.clip('x').diff(ModelConfig.clip('x', local_files_only=True)) == {}
    assert set(ModelConfig.clip('x').diff(ModelConfig.clip('y'))) == {'clip_model'}

def test_clip_folder_round_trip(tiny_folder, tmp_path):
    "A saved CLIP folder: its weights are loaded, every part learns, and a checkpoint gives back the same model."
    from transformers import AutoTokenizer
    from safetensors.torch import load_file
    torch.manual_seed(0)
    config = ModelConfig.clip(str(tiny_folder), embed_dim=16, local_files_only=True)
    model = CIRModel(config)
    saved = load_file(tiny_folder/'model.safetensors')
    assert torch.equal(model.image_encoder.projection.weight, saved['visual_projection.weight'])
    assert torch.equal(model.text_encoder.backbone['projection'].weight, saved['text_projection.weight'])
    tokens = AutoTokenizer.from_pretrained(tiny_folder)(['is red', 'is darker, sleeveless', 'has a pattern'], padding=True, return_tensors='pt')
    reference, target = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)      # 64 px: interpolated positions
    query, target_features = model(reference, tokens['input_ids'], tokens['attention_mask'], target)
    info_nce(query, target_features).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    torch.save({'model_config': asdict(config), 'model': model.state_dict()}, tmp_path/'best.pt')
    back = torch.load(tmp_path/'best.pt', weights_only=True)
    other = CIRModel(ModelConfig.from_dict(json.loads(json.dumps(back['model_config']))))
    other.load_state_dict(back['model'])
    model.eval(); other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other.compose(reference, tokens['input_ids'], tokens['attention_mask']),
                                   model.compose(reference, tokens['input_ids'], tokens['attention_mask']))

def test_random_clip_from_config():
    model = CIRModel(ModelConfig.clip(None, clip_config=TINY_CLIP, embed_dim=8))
    assert model.image_encoder.out_channels == model.text_encoder.out_dim == TINY_CLIP['projection_dim']

def test_train_and_eval_with_clip(tiny_folder, tmp_path, capsys):
    "`cir_unc_train` with a CLIP folder (its tokenizer, the combiner), then `cir_unc_eval` of the run."
    from cir_unc.cli import train_cli, eval_cli
    run = tmp_path/'run'
    train_cli(['--preset', 'synthetic', '--epochs', '1', '--batch-size', '16', '--no-progress', '--device', 'cpu',
               '--data-root', str(tmp_path/'data'), '--out', str(run), '--data', f'synthetic={json.dumps(SIZES)}',
               '--data', 'image_size=32', '--model', 'image_encoder=clip', '--model', 'text_encoder=clip',
               '--model', f'clip_model={tiny_folder}', '--model', 'compositor=combiner', '--model', 'embed_dim=16'])
    checkpoint = torch.load(run/'best.pt', weights_only=True)
    assert checkpoint['model_config']['clip_model'] == str(tiny_folder) and checkpoint['tokenizer'] is None
    assert {'model', 'text_backbone', 'image_backbone'} == {g['name'] for g in torch.load(run/'last.pt', weights_only=True)['optimizer']['param_groups']}
    results = json.loads((run/'results.json').read_text())['results']
    assert all(r['queries'] > 0 for r in results.values())
    capsys.readouterr()
    eval_cli([str(run), '--device', 'cpu'])
    assert 'R@10' in capsys.readouterr().out

# ------------------------------------------------------------------------------------------- all-MiniLM-L6-v2, real weights
try: MINILM, WHY = str(minilm_path()), ''
except (ModuleNotFoundError, FileNotFoundError) as e: MINILM, WHY = None, f'the pretrained extra is absent: {e}'
needs_minilm = pytest.mark.skipif(MINILM is None, reason=WHY)

@needs_minilm
def test_minilm_real_weights(offline):
    "The real `from_pretrained` path: the weights of the file, its tokenizer, both poolings, the ×0.01 group."
    from transformers import AutoTokenizer
    from safetensors.torch import load_file
    tokenizer = AutoTokenizer.from_pretrained(MINILM, local_files_only=True)
    assert tokenizer.tokenize('is darker and sleeveless')[:2] == ['is', 'darker']
    texts = ['is red', 'is crimson', 'has long sleeves']
    tokens = tokenizer(texts, padding=True, return_tensors='pt')
    features = {}
    for pooling in ('first', 'mean'):
        torch.manual_seed(0)
        model = CIRModel(ModelConfig.laptop(vocab_size=50, text_encoder=MINILM, text_pooling=pooling, local_files_only=True))
        backbone = model.text_encoder.backbone.model
        assert torch.equal(backbone.embeddings.word_embeddings.weight, load_file(f'{MINILM}/model.safetensors')['embeddings.word_embeddings.weight'])
        model.eval()
        with torch.no_grad():
            hidden = backbone(**tokens).last_hidden_state
            features[pooling] = model.encode_text(tokens['input_ids'], tokens['attention_mask'])
        groups = model.param_groups(0.02, text_lr_scale=0.01)
        assert groups[1]['name'] == 'text_backbone' and groups[1]['lr'] == pytest.approx(2e-4)
        assert sum(p.numel() for p in groups[1]['params']) == sum(p.numel() for p in backbone.parameters()) > 22_000_000
    assert not torch.allclose(features['first'], features['mean'])
    mask = tokens['attention_mask'].unsqueeze(-1)
    mean = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similar, different = mean[0] @ mean[1], mean[0] @ mean[2]
    assert similar > different + 0.1, (similar, different)          # pretrained: red is nearer crimson than long sleeves

@needs_minilm
def test_synthetic_preset_uses_minilm_tokenizer():
    "With a pretrained text encoder the synthetic data's word tokenizer is not used: ids must be the model's own words."
    from cir_unc.data import synthetic_tokenizer
    from cir_unc.train import build_tokenizer, build_model_config, preset_config
    class Data: tokenizer = synthetic_tokenizer()          # what build_model_config and build_tokenizer read of the data
    config = build_model_config(preset_config('synthetic', model={'text_encoder': MINILM, 'text_pooling': 'mean'}), Data)
    tokenizer = build_tokenizer(config, Data)
    assert type(tokenizer).__name__.startswith('BertTokenizer') and tokenizer('is red')['input_ids'][0] == 101
    assert build_tokenizer(build_model_config(preset_config('synthetic'), Data), Data) is Data.tokenizer
