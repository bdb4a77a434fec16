"""The core: boxes, image reading and writing, model weights, TensorFlow loading.

Nothing here imports FiftyOne or a detection model, so every layer above (the blur module, the
detectors, the engine, the FiftyOne jobs, the front ends) can build on it.
"""
