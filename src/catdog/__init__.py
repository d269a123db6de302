"""catdog: four Keras models that tell cats from dogs, trained, tracked and compared reproducibly.

Importing the package registers the `params` resolver through which conf/ reads the study's settings from
params.yaml, so every entry point and test composes the same config.
"""

from catdog.settings.params import register_resolver

register_resolver()
