"""A model is a program: which of its operations reach outside the tensors, and the one flag that allows them.

A SavedModel's graph can read and write files (`tf.io.write_file`), list folders, run Python (`tf.py_function`)
or open network connections, and TensorFlow runs them whenever the model is called, as convert and parity do.
A .tflite can carry the same TensorFlow ops as Flex (SELECT_TF_OPS) ops, which full TensorFlow's interpreter
runs; an ONNX model can name operators of a custom domain, which only a native custom-op library implements.
Each loader refuses such a model before the first call, in one line naming the op, unless the user passes
`--trust-model` (docs/reliability.md, "A model is a program"). This module is the one list they share.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeproof.errors import UsageError

TRUST_FLAG = "--trust-model"

# TensorFlow ops that touch files, folders, processes, Python or the network. A classifier needs none of them.
FILE_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "ImmutableConst",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "LMDBReader", "IdentityReader",
    "IdentityReaderV2", "ReaderReadV2", "ReaderReadUpToV2", "ReaderRestoreStateV2",
    "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "LMDBDataset",
    "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset", "SaveDataset", "SaveDatasetV2",
    "ExperimentalSaveDataset", "LoadDataset", "ExperimentalLoadDataset", "SnapshotDataset", "SnapshotDatasetV2",
    "SnapshotDatasetReader", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "DistributedSave",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter", "CloseSummaryWriter",
    "DebugIdentityV2", "DebugIdentityV3", "DebugNumericSummaryV2",
})
SYSTEM_OPS = frozenset({
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "RpcCall", "RpcServer", "RpcServerStart", "RpcServerRegister", "RpcClient", "Rpc", "TryRpc",
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
    "RegisterDataset", "RegisterDatasetV2", "GcsConfigureCredentials", "GcsConfigureBlockCache",
    "BigQueryReader", "GenerateBigQueryReaderPartitions", "FileSystemSetConfiguration",
})
# the checkpoint ops: a SavedModel's own saver functions hold them (allowed there, see convert/saved_model_scan)
CHECKPOINT_OPS = frozenset({
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    "ShardedFilename", "ShardedFilespec",
})
# ONNX domains ONNX Runtime, OpenVINO and OpenCV implement themselves; any other needs a native custom-op library
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"})


def tf_op_risk(op: str, attrs: Mapping[str, str] | None = None) -> str | None:
    """Why TensorFlow op `op` reaches outside the tensors (a short phrase), or None when it does not.

    attrs: string attributes of the node, for ops that are harmless in their usual form (PrintV2 prints to
    stderr unless its output_stream names a file)."""
    if op in FILE_OPS:
        return "reads or writes files"
    if op in SYSTEM_OPS:
        return "runs Python code" if "PyFunc" in op else "reaches the network or the system"
    if op in CHECKPOINT_OPS:
        return "reads or writes checkpoint files"
    if op == "PrintV2" and str((attrs or {}).get("output_stream", "")).startswith("file://"):
        return f"prints to the file {str(attrs['output_stream'])[7:]!r}"
    return None


def refuse(model: str, op: str, why: str, where: str = "") -> UsageError:
    """The one line: the model, the op and what it does, and how a user who trusts the model goes on."""
    at = f" (in {where})" if where else ""
    return UsageError(f"model '{model}' holds the op {op}{at}, which {why}: a model is a program, and edgeproof "
                      f"runs only models whose graph stays inside its tensors; if you trust this model and its "
                      f"source, pass {TRUST_FLAG} to run it anyway")
