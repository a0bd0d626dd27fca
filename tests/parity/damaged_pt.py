"""Writes DIR/good.pt (torch.save of a small state dict) and two damaged
copies: short.pt, whose storage data/0 is cut to 20 bytes, and missing.pt,
without it (tests/models.rs checks that prunex refuses both)."""
import sys
import zipfile

import torch

d = sys.argv[1]
torch.save({"w": torch.ones(4, 3), "b": torch.ones(4)}, f"{d}/good.pt")
src = zipfile.ZipFile(f"{d}/good.pt")
for name, cut in (("short", 20), ("missing", None)):
    with zipfile.ZipFile(f"{d}/{name}.pt", "w") as out:
        for entry in src.namelist():
            data = src.read(entry)
            if entry.endswith("/data/0"):
                if cut is None:
                    continue
                data = data[:cut]
            out.writestr(entry, data)
