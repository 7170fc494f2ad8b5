import random, time, torch
from enas.spaces.rnn import RnnSpace, RnnSpaceConfig
from enas.spaces.base import TaskInfo
dev = torch.device("cuda")
info = TaskInfo(vocab_size=10000)
for variant in ("paper", "corrected"):
    sp = RnnSpace(RnnSpaceConfig(hidden=64, variant=variant))
    net = sp.build_supernet(info).to(dev)
    rng = random.Random(0)
    arch = sp.decode([rng.randrange(d.size) for d in sp.decisions() if d.kind != "anchor"])
    child = sp.build_child(arch, info, final=False).to(dev)
    child.load_state_dict(sp.child_state_from_supernet(net, arch))
    tok = torch.randint(0, 10000, (35, 8), device=dev)
    net.train(); out = net(tok, net.init_hidden(8), arch=arch); out[0].logsumexp(-1).mean().backward()
    net.eval(); child.eval()
    a = net(tok, net.init_hidden(8), arch=arch); b = child(tok, child.init_hidden(8))
    print(variant, "cuda supernet==child max diff", (a[0] - b[0]).abs().max().item(), a[1].device)
sp = RnnSpace(RnnSpaceConfig(hidden=1000))
net = sp.build_supernet(info).to(dev).train()
tok = torch.randint(0, 10000, (35, 64), device=dev); tgt = torch.randint(0, 10000, (35, 64), device=dev)
archs = [sp.decode([random.randrange(d.size) for d in sp.decisions()]) for _ in range(6)]
def step(arch):
    net.zero_grad(set_to_none=True)
    out = net(tok, net.init_hidden(64), arch=arch)[0]
    torch.nn.functional.cross_entropy(out.view(-1, 10000), tgt.view(-1)).backward()
step(archs[0]); torch.cuda.synchronize(); t = time.perf_counter()
for a in archs[1:]: step(a)
torch.cuda.synchronize(); print("cuda H=1000 B=64 T=35 supernet step", (time.perf_counter() - t) / 5, "s")
