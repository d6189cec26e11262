"""Job assembly and entry points: the `matteflow` CLI, `remove_background`, options, profiles."""
