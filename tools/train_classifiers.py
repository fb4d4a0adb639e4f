"""Train the feature classifiers that ship in src/diffusekit/weights (the FCD feature space).

    python tools/train_classifiers.py            # digits (seconds) and Fashion-MNIST (minutes)

Fashion-MNIST: trained on the 60,000 training images, accuracy measured on the 10,000 test images.
digits: trained on a seeded 90% of the 1,797 images, accuracy on the other 10%.
Seed, epochs and test accuracy are written next to the weights (<name>.json).
"""
import sys

from diffusekit.data import load_data
from diffusekit.evaluate import WEIGHTS_DIR, save_classifier, train_classifier


def main(names):
    for name in names:
        if name == "digits":
            model, meta = train_classifier(load_data("digits"), seed=0, epochs=40, batch_size=64, progress=False)
        else:
            model, meta = train_classifier(load_data("fashion-mnist"), load_data("fashion-mnist:test"), seed=0,
                                           epochs=3, batch_size=128, progress=True)
        meta["script"] = "tools/train_classifiers.py"
        save_classifier(model, meta, WEIGHTS_DIR / name)
        print(name, meta)


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits", "fashion-mnist"])
