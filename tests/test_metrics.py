"Search and Recall@K against brute force, edge cases, FAISS parity, feature computation, alignment, bad input."
import math
import pytest
import torch
from cir_unc.metrics import (topk_search, dense_topk, recall_at_k, pad_index_sets, first_hit_rank, MISS,
                             gallery_features, query_features, evaluate_sets, RecallResult)
from cir_unc.model import CIRModel, ModelConfig

def random_sets(Q, N, most, generator):
    return [torch.randint(0, N, (int(torch.randint(0, most + 1, (), generator=generator)),), generator=generator).tolist()
            for _ in range(Q)]

def brute_force(query, gallery, hits, ks, exclude):
    "Recall@K in % from the definition: stable sort of the dense scores, excluded items dropped."
    found = dict.fromkeys(ks, 0)
    for q in range(len(query)):
        sims = (query[q] @ gallery.T).tolist()
        order = sorted((j for j in range(len(gallery)) if j not in set(exclude[q])), key=lambda j: -sims[j])
        for k in ks: found[k] += any(j in set(hits[q]) for j in order[:k])
    return {k: 100. * v / len(query) for k, v in found.items()}

@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('tied', [False, True])
@pytest.mark.parametrize('chunks', [(1024, None), (3, None), (4, 7), (1, 1)])
def test_recall_equals_brute_force(seed, tied, chunks):
    g = torch.Generator().manual_seed(seed)
    Q, N, D = 29, 41, 6
    query, gallery = torch.randn(Q, D, generator=g), torch.randn(N, D, generator=g)
    if tied: query, gallery = query.sign(), gallery.round().clamp(-1, 1)
    hits, exclude = random_sets(Q, N, 3, g), random_sets(Q, N, 4, g)
    ks = (1, 2, 5, 10, 40, 41, 100)
    result = recall_at_k(query, gallery, hits, 'test', ks, exclude, chunk_size=chunks[0], gallery_chunk_size=chunks[1])
    assert result.recall == brute_force(query, gallery, hits, ks, exclude)
    assert result.empty_hit_sets == sum(not h for h in hits)
    assert result.protocol == 'test' and result.queries == Q and result.gallery == N
    expected = dense_topk(query, gallery, 100, exclude)[1]
    assert torch.equal(topk_search(query, gallery, 100, exclude, *chunks)[1], expected)

def test_everything_excluded_and_k_beyond_gallery():
    query, gallery = torch.randn(2, 4), torch.randn(3, 4)
    scores, indices = topk_search(query, gallery, 10, exclude=[[0, 1, 2], [1]])
    assert indices.shape == (2, 3)
    assert indices[0].tolist() == [-1, -1, -1] and scores[0].eq(-math.inf).all()
    assert sorted(indices[1, :2].tolist()) == [0, 2] and indices[1, 2] == -1
    result = recall_at_k(query, gallery, [[0], [2]], 'p', ks=(1, 50), exclude=[[0, 1, 2], [1]])
    assert result.recall[50] == 50.

def test_exclusion_as_tensors():
    g = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(10, 5, generator=g), torch.randn(20, 5, generator=g)
    single = torch.arange(10); single[3] = -1
    a = topk_search(query, gallery, 5, exclude=single)[1]
    b = topk_search(query, gallery, 5, exclude=[[i] if i != 3 else [] for i in range(10)])[1]
    assert torch.equal(a, b)

def test_first_hit_rank_misses():
    indices = torch.tensor([[4, 2, -1], [1, 0, 3]])
    hits = pad_index_sets([[], [3, 0]])
    assert first_hit_rank(indices, hits).tolist() == [MISS, 1]

def test_groups_and_flat_dict():
    query, gallery = torch.eye(3), torch.eye(3)
    result = recall_at_k(query, gallery, [[0], [0], []], 'p', ks=(1, 3), groups=['a', 'b', 'b'])
    flat = result.as_dict()
    assert flat['R@1'] == pytest.approx(100 / 3) and flat['b/R@3'] == 50. and flat['b/empty_hit_sets'] == 1
    assert flat['protocol'] == 'p' and 'a/R@1' in flat
    assert 'p (gallery 3)' in str(result)

@pytest.mark.parametrize('call, message', [
    (lambda q, g: topk_search(q, g, 0), 'k must be'),
    (lambda q, g: topk_search(q, g, 1, backend='annoy'), 'backend'),
    (lambda q, g: topk_search(q, g[:, :2], 1), 'dims differ'),
    (lambda q, g: topk_search(q, g, 1, exclude=[[0]]), 'exclude has 1 rows'),
    (lambda q, g: recall_at_k(q, g, [[0]], 'p'), 'hits has 1 rows'),
    (lambda q, g: recall_at_k(q, g, [[0], [1]], 'p', groups=['a']), 'group labels'),
    (lambda q, g: recall_at_k(q, g, [[0], [5]], 'set/p'), 'set/p: hit sets point at gallery index 5, but there are 5'),
    (lambda q, g: recall_at_k(q, g, [[0], [1]], 'set/p', exclude=[[7], []]), 'set/p: exclusions point at gallery index 7'),
    (lambda q, g: recall_at_k(q, g, [[0], [-2]], 'set/p'), 'negative index'),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message): call(torch.randn(2, 4), torch.randn(5, 4))

def test_faiss_equals_torch():
    pytest.importorskip('faiss', reason='FAISS is not installed (pip install faiss-cpu)')
    g = torch.Generator().manual_seed(3)
    query, gallery = torch.randn(300, 48, generator=g), torch.randn(700, 48, generator=g)
    exclude, hits = random_sets(300, 700, 3, g), random_sets(300, 700, 2, g)
    for k in (1, 7, 50, 800):
        s_torch, i_torch = topk_search(query, gallery, k, exclude)
        s_faiss, i_faiss = topk_search(query, gallery, k, exclude, backend='faiss')
        finite = s_torch.clamp_min(-1e9)
        gaps = torch.full_like(finite, math.inf)                    # distance of each score to its neighbours in the list
        gaps[:, 1:] = (finite[:, 1:] - finite[:, :-1]).abs()
        gaps[:, :-1] = torch.minimum(gaps[:, :-1], gaps[:, 1:].clone())
        clear = gaps > 1e-4                                          # two scores within float rounding may swap
        assert torch.equal(i_faiss[clear], i_torch[clear]) and clear.float().mean() > 0.99
        torch.testing.assert_close(s_faiss.clamp_min(-1e9), s_torch.clamp_min(-1e9), rtol=1e-4, atol=1e-4)
    a = recall_at_k(query, gallery, hits, 'p', exclude=exclude, backend='faiss')
    b = recall_at_k(query, gallery, hits, 'p', exclude=exclude)
    assert all(abs(a.recall[k] - b.recall[k]) <= 100 / 300 for k in a.recall)   # at most one near-tie query apart

def test_features_batched_inference_mode_and_mode_restored():
    torch.manual_seed(0)
    model = CIRModel(ModelConfig.laptop(vocab_size=30, text_dropout=0.5))
    images = torch.randn(9, 3, 32, 32)
    ids, mask = torch.randint(1, 30, (5, 4)), torch.ones(5, 4, dtype=torch.long)
    gallery = gallery_features(model, ({'images': images[i:i + 4], 'other': None} for i in range(0, 9, 4)))
    assert model.training and gallery.shape == (9, 128) and not gallery.requires_grad and gallery.dtype == torch.float32
    queries = query_features(model, [{'reference': images[:5], 'input_ids': ids, 'attention_mask': mask}])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(gallery, model.encode_target(images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(queries, model.compose(images[:5], ids, mask), rtol=1e-4, atol=1e-5)
    assert not model.training
    with pytest.raises(ValueError, match='no batches'): gallery_features(model, [])

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(100, 16, generator=g), torch.randn(300, 16, generator=g)
    exclude = [[i] for i in range(100)]
    cpu = topk_search(query, gallery, 20, exclude)[1]
    gpu = topk_search(query.cuda(), gallery.cuda(), 20, exclude, chunk_size=17)[1]
    assert gpu.device.type == 'cuda' and torch.equal(gpu.cpu(), cpu)

class Broken:
    "The images of an evaluation set, one of which cannot be decoded."
    def __init__(self, images, bad): self.images, self.bad = images, bad
    def __contains__(self, image_id): return image_id in self.images
    def open(self, image_id):
        from cir_unc.data import CorruptImage
        if image_id == self.bad: raise CorruptImage(image_id, f'{image_id}.jpg', 'image file is truncated')
        return self.images.open(image_id)

@pytest.mark.parametrize('where', ['gallery start', 'gallery end', 'query reference'])
def test_evaluation_refuses_misaligned_features(where):
    "An image that cannot be decoded never shifts the rows: the evaluation stops and names the set."
    import dataclasses
    from cir_unc.data import SyntheticConfig, make_synthetic, synthetic_evals, synthetic_tokenizer, image_transform
    split = make_synthetic(SyntheticConfig(train_images=60, val_images=60, test_images=60, train_triplets=4, val_triplets=20,
                                           test_triplets=4))["val"]
    ev = synthetic_evals(split, 'val', protocols=('single',))[0]
    tokenizer = synthetic_tokenizer()
    torch.manual_seed(0)
    model = CIRModel(ModelConfig.laptop(tokenizer.vocab_size, cnn_widths=(8, 16, 32), text_width=32))
    args = dict(transform=image_transform(32), tokenizer=tokenizer, device=torch.device('cpu'), batch_size=8)
    good = evaluate_sets(model, [ev], **args)[f'val/{ev.category}/single']
    assert good.gallery == len(ev.gallery) and good.queries == len(ev.queries)
    bad = {'gallery start': ev.gallery[0], 'gallery end': ev.gallery[-1], 'query reference': ev.queries[0].reference}[where]
    broken = dataclasses.replace(ev, images=Broken(ev.images, bad))
    with pytest.raises(ValueError, match=f'synthetic/val/{ev.category}/single: .*could not be decoded'):
        evaluate_sets(model, [broken], **args)
