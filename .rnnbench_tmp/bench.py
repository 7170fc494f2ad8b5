import random, sys, time
import torch
from torch import nn
from enas.spaces.rnn import RnnSpace, RnnSpaceConfig
from enas.spaces.base import TaskInfo

H = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
V, B, T, ITERS = 10000, 64, 35, int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.manual_seed(0); random.seed(0)
import os
if os.environ.get("THREADS"): torch.set_num_threads(int(os.environ["THREADS"]))
info = TaskInfo(vocab_size=V)

class LSTMLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, H); self.rnn = nn.LSTM(H, H, 2)
        self.dec = nn.Linear(H, V, bias=False); self.dec.weight = self.emb.weight
    def forward(self, x, h):
        o, h = self.rnn(self.emb(x), h); return self.dec(o), h

def timeit(step):
    step(); ts = []
    for _ in range(ITERS):
        t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
    return min(ts)

tok = torch.randint(0, V, (T, B)); tgt = torch.randint(0, V, (T, B))
ce = nn.CrossEntropyLoss()
lstm = LSTMLM()
hl = (torch.zeros(2, B, H), torch.zeros(2, B, H))
def lstm_step():
    lstm.zero_grad(set_to_none=True)
    out, _ = lstm(tok, hl); ce(out.view(-1, V), tgt.view(-1)).backward()
t_lstm = timeit(lstm_step)
del lstm

space = RnnSpace(RnnSpaceConfig(hidden=H))
sup = space.build_supernet(info); sup.train()
acts = [[random.randrange(d.size) for d in space.decisions() if d.kind != "anchor"] for _ in range(ITERS + 1)]
archs = [space.decode(a) for a in acts]
it = iter(archs * 3)
h0 = sup.init_hidden(B)
def sup_step(arch=None):
    sup.zero_grad(set_to_none=True)
    out, _, _ = sup(tok, h0, arch=arch or next(it)); ce(out.view(-1, V), tgt.view(-1)).backward()
t_sup = timeit(sup_step)
arch = archs[0]
t_sup_fixed = timeit(lambda: sup_step(arch))
del sup
child = space.build_child(arch, info, final=False); child.train()
def child_step():
    child.zero_grad(set_to_none=True)
    out, _, _ = child(tok, h0); ce(out.view(-1, V), tgt.view(-1)).backward()
t_child = timeit(child_step)
print(f"H={H} threads={torch.get_num_threads()}  lstm {t_lstm:.3f}s  supernet(random archs) {t_sup:.3f}s  "
      f"supernet(arch0) {t_sup_fixed:.3f}s  child(arch0, final=False) {t_child:.3f}s")
print(f"supernet/LSTM tokens/s ratio {t_lstm / t_sup:.3f}   supernet step / child step {t_sup_fixed / t_child:.3f}")
