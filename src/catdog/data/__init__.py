"""The data: the archive fetched and checked (`download`), split into seeded manifests (`split`, `manifests`),
decoded once into a cache and served by tf.data (`dataset`), and the check that a command's data is there
(`require`). Imports `catdog.common` and `catdog.settings`."""
