"""Send a few scikit-learn digits to the demo gateway with the official tritonclient and
print the predictions next to the true labels."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="digits")
    parser.add_argument("-n", type=int, default=16, help="how many digits to send")
    args = parser.parse_args(argv)

    import numpy as np
    import tritonclient.http as httpclient
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[-args.n:] / 16.0).astype(np.float32)
    labels = digits.target[-args.n:]
    client = httpclient.InferenceServerClient(urlparse(args.url).netloc)
    inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = client.infer(args.model, [inp], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    predicted = result.as_numpy("probabilities").argmax(axis=1)
    print("true     ", " ".join(map(str, labels)))
    print("predicted", " ".join(map(str, predicted)))
    print(f"accuracy {np.mean(predicted == labels):.3f} on {len(labels)} digits, model version {result.get_response()['model_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
