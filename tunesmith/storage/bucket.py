"""`python -m tunesmith.storage.bucket`: create the store's bucket if it is missing.

Run once before the API and workers start (compose's `store-bucket` service): the store
answers its health check before any bucket exists, and a missing bucket would fail the
first upload."""

import sys

from tunesmith.settings import settings
from tunesmith.storage import remote


def main() -> int:
    store = remote()
    if store is None:
        print(f"storage_url {settings.storage_url!r} is not s3://: nothing to create")
        return 0
    store.ensure_bucket()
    print(f"bucket {store.bucket} is ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
