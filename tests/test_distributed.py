"""Two processes (gloo, CPU) train exactly like one process with the same global batch.

Each step's loss and every parameter's gradient must agree within 1e-5. The model here has no batch norm (per-rank
batch statistics would differ by design; on GPUs the trainer converts batch norm to SyncBatchNorm), and the augmenter's
noise comes from one seeded generator that every rank advances identically.
"""
import os, socket
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from cir_unc.losses import MultiGrainedLoss
from cir_unc.train import train_step
from cir_unc.distributed import GlobalBatchSampler

B, D, STEPS = 8, 16, 3

class TinyModel(nn.Module):
    "Stands in for CIRModel: same call signature, no batch norm."
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(12, D); self.text = nn.Embedding(20, D); self.mix = nn.Linear(2 * D, D)
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

def run(rank: int, world: int):
    "Train STEPS steps on this rank's slices; return per-step losses and gradients (of the model's parameters)."
    data, model = dataset(), TinyModel()
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
    return losses, grads

def worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try: queue.put((rank, run(rank, world)))
    finally: dist.destroy_process_group()

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_two_processes_equal_one():
    single_losses, single_grads = run(0, 1)
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs: p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs: p.join(timeout=60); assert p.exitcode == 0
    for rank in (0, 1):
        losses, grads = results[rank]
        assert losses == pytest.approx(single_losses, abs=1e-5), (rank, losses, single_losses)
        for step in range(STEPS):
            for name, g in single_grads[step].items():
                torch.testing.assert_close(torch.from_numpy(grads[step][name]), torch.from_numpy(g), atol=1e-5, rtol=1e-5,
                                           msg=f'rank {rank} step {step} {name}')
