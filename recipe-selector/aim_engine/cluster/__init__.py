"""The cluster as typed values: which GPU product a node is (detect), what the cluster has free
(inventory) and where a fixed recipe's pods fit (placement). Pure: built from node objects the
adapters read."""
