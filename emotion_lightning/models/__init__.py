"""Networks: each takes the front-end's output and returns class logits."""
