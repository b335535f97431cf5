"""hubwatch backfill: fingerprint the models already on the Hub on a Dask cluster, into the one store.

``sources`` lists the work (the Hub's ``/api/models`` pages, or a file of repo ids) in pages that
each carry a resume token; ``job`` is what a worker runs for one repo revision; ``driver`` submits
the jobs and is the store's only writer.
"""
