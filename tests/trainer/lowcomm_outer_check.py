"""Run on 3 ranks (``spawn_ranks.py``; islands [0] and [1, 2]): the outer step averages the islands'
changes weighted by the samples each trained on. Rank 0 writes what every rank ended with."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from trainer.lowcomm.outer import IslandGroups, OuterStep

dist.init_process_group("gloo")
rank = dist.get_rank()
groups = IslandGroups([(0,), (1, 2)], rank)
parameter = nn.Parameter(torch.zeros(4))
outer = OuterStep([parameter], groups, lr=1.0, momentum=0.0)
# Island 0 moved by +1, island 1 (both ranks, the same replica) by +4; island 1 trained on
# twice the samples: the weighted mean change is (1*1 + 2*4) / 3 = 3.
with torch.no_grad():
    parameter.add_(1.0 if groups.index == 0 else 4.0)
outer.step([32, 64])
values = [None] * 3
dist.all_gather_object(values, parameter.detach().tolist())
if rank == 0:
    with open(sys.argv[1], "w") as out:
        json.dump({"values": values, "bytes": outer.exchanged_bytes()}, out)
# Leave together: a rank that closes its connections while a peer still reads from them makes
# gloo abort that peer (seen once on a loaded machine).
dist.barrier()
dist.destroy_process_group()
