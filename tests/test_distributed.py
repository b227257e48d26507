"""Two processes (gloo, CPU) train exactly like one process with the same global batch.

Each step's loss, every parameter's gradient and the batch-norm running statistics must agree within 1e-5, with batch
norm over the global batch (`sync_batch_norm`: GlobalBatchNorm on the CPU); with plain batch norm, each rank
normalises its own slice and the gradients differ — the test shows that too. The augmenter's noise comes from one
seeded generator that every rank advances identically.
"""
import os, socket
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from cir_unc.losses import MultiGrainedLoss
from cir_unc.train import train_step
from cir_unc.distributed import GlobalBatchSampler, sync_batch_norm

B, D, STEPS = 8, 16, 3

class TinyModel(nn.Module):
    "Stands in for CIRModel: same call signature, batch norm in the image branch."
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Sequential(nn.Linear(12, D), nn.BatchNorm1d(D), nn.ReLU(), nn.Linear(D, D))
        self.text = nn.Embedding(20, D); self.mix = nn.Linear(2 * D, D)
    def encode_target(self, images): return nn.functional.normalize(self.image(images), dim=-1) * 4
    def compose(self, reference, input_ids, attention_mask):
        text = (self.text(input_ids) * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        return nn.functional.normalize(self.mix(torch.cat([self.image(reference), text], -1)), dim=-1) * 4
    def forward(self, reference, input_ids, attention_mask, target):
        return self.compose(reference, input_ids, attention_mask), self.encode_target(target)

def dataset():
    g = torch.Generator().manual_seed(1)
    n = 4 * B
    return {'reference': torch.randn(n, 12, generator=g), 'target': torch.randn(n, 12, generator=g),
            'input_ids': torch.randint(0, 20, (n, 5), generator=g), 'attention_mask': torch.ones(n, 5, dtype=torch.long)}

def run(rank: int, world: int, sync: bool = True):
    "Train STEPS steps on this rank's slices; return per-step losses, gradients and batch-norm running statistics."
    data, model = dataset(), TinyModel()
    if sync: sync_batch_norm(model, torch.device('cpu'))
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion, noise = MultiGrainedLoss('uncertainty'), torch.Generator().manual_seed(7)
    sampler = GlobalBatchSampler(len(data['reference']), B, seed=0, rank=rank, world_size=world)
    losses, grads = [], []
    for step, idx in enumerate(sampler):
        if step == STEPS: break
        batch = {k: v[idx] for k, v in data.items()}
        terms = train_step(net, batch, criterion, optimizer, epoch=0, total_epochs=4, step=step, generator=noise)
        losses.append(terms.total.item())
        grads.append({n: p.grad.numpy().copy() for n, p in model.named_parameters()})   # numpy: pickled by value across processes
        grads[-1]['running_var'] = model.image[1].running_var.numpy().copy()
    return losses, grads

def worker(rank, world, port, queue):
    "Both settings in one process group: batch norm over the global batch, and plain batch norm."
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try: queue.put((rank, {sync: run(rank, world, sync) for sync in (True, False)}))
    finally: dist.destroy_process_group()

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def two_processes() -> dict:
    "rank → {sync: (losses, gradients)} from two processes."
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs: p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs: p.join(timeout=60); assert p.exitcode == 0
    return results

def test_two_processes_equal_one(two_processes):
    single_losses, single_grads = run(0, 1)
    results = {rank: r[True] for rank, r in two_processes.items()}
    for rank in (0, 1):
        losses, grads = results[rank]
        assert losses == pytest.approx(single_losses, abs=1e-5), (rank, losses, single_losses)
        for step in range(STEPS):
            for name, g in single_grads[step].items():
                torch.testing.assert_close(torch.from_numpy(grads[step][name]), torch.from_numpy(g), atol=1e-5, rtol=1e-5,
                                           msg=f'rank {rank} step {step} {name}')

def test_plain_batch_norm_differs(two_processes):
    "Without synchronisation each rank normalises its own slice: the first step's loss already differs."
    single_losses, _ = run(0, 1, sync=False)
    losses, _ = two_processes[0][False]
    assert abs(losses[0] - single_losses[0]) > 1e-4
