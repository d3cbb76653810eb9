"""Where a file job's work runs: ``local`` (this process), ``ray_images`` (photos spread over Ray Data actors) and
``ray_sequence`` (one video's frames on one Ray actor), with ``ray_cluster`` joining Ray for both (the code shipped,
a bounded wait, the resources checked). Each runs a ``protocols.BatchJob`` and folds its
``ItemResult`` values into a ``JobSummary``; the Ray engines are imported only when used (Ray is optional)."""
