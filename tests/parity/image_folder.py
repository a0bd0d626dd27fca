"""torchvision's ImageFolder on a folder: prints, per image in its order,
the label and the pixel values (0-255, CHW) as JSON."""
import json
import sys

from torchvision import datasets, transforms

ds = datasets.ImageFolder(sys.argv[1], transform=transforms.PILToTensor())
out = [{"label": int(y), "pixels": x.flatten().tolist()} for x, y in ds]
print(json.dumps({"classes": ds.classes, "items": out}))
