"""Training, in resumable stages: ``python -m splitnet.train`` runs it.

    common              the LR schedule, distillation, resumable state files
    fashion_mnist       the small model: backbone, exits, bottlenecks
    camera              the camera model: backbone, exits and bottlenecks, refinement,
                        the entropy bottleneck, int8 calibration, the card
    entropy_bottleneck  the camera model's learned entropy bottleneck, on cached activations
"""
