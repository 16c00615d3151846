//! The Python skin: every function here is a thin call into the core.

use pyo3::prelude::*;

#[pyfunction]
fn count_symbols(py: Python<'_>, data: &[u8]) -> usize {
    py.detach(|| crate::count_symbols(data))
}

#[pymodule]
fn _segmenter(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::VERSION)?;
    m.add_function(wrap_pyfunction!(count_symbols, m)?)?;
    Ok(())
}
