"""Dataset protocols: readers, the paper's filters, dense ids and period cuts."""

from sml_sim.data.base import DataError, Dataset, PeriodData, Split
from sml_sim.data.protocols import PROTOCOLS, DatasetSpec, check_spec, input_paths, load_dataset, reads_a_file

__all__ = ["DataError", "Dataset", "DatasetSpec", "PROTOCOLS", "PeriodData", "Split", "check_spec", "input_paths", "reads_a_file",
           "load_dataset"]
