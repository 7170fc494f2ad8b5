import random, sys, torch, time
from enas.spaces.rnn import RnnSpace, RnnSpaceConfig
from enas.spaces.base import TaskInfo
H=int(sys.argv[1]); V=10000
torch.set_num_threads(2)
sp = RnnSpace(RnnSpaceConfig(hidden=H)); net = sp.build_supernet(TaskInfo(vocab_size=V)).train()
tok = torch.randint(0, V, (35, 64)); tgt = torch.randint(0, V, (35, 64))
arch = sp.decode([random.randrange(d.size) for d in sp.decisions()])
def step():
    net.zero_grad(set_to_none=True)
    out = net(tok, net.init_hidden(64), arch=arch)[0]
    torch.nn.functional.cross_entropy(out.view(-1, V), tgt.view(-1)).backward()
step()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as p:
    step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
