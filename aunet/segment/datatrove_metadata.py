"""What `AUNetSegment` leaves in a datatrove Document's metadata for `AUNetShardWriter`.

Apart from both so that the writer's task logic (`task_shards`) and the pipeline steps
(`datatrove`) share the keys without importing each other; datatrove itself is not needed.
"""

from __future__ import annotations

#: Metadata keys AUNetSegment sets and AUNetShardWriter takes out again.
MASK_KEY = "aunet_level_mask"
STRATEGY_KEY = "aunet_strategy"
REJECT_KEY = "aunet_reject"


def document_source(doc) -> str:
    """Where a document came from, for rejects: the reader's file and the document id."""
    path = doc.metadata.get("file_path")
    return f"{path} (id {doc.id})" if path else f"id {doc.id}"
