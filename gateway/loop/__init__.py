"""The online-learning loop: feedback and capture, label specs, fine-tune jobs, canaries
(the registry's Router), their metrics and wiring. Protocol-neutral."""
