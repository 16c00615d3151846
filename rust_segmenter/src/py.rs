//! The Python skin: argument conversion, GIL release, error mapping. No algorithm lives here.

use std::sync::{Arc, Mutex};

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

use crate::{LevelStream, Segmenter, SegmenterError, Strategy};

impl From<SegmenterError> for PyErr {
    fn from(e: SegmenterError) -> Self {
        match e {
            SegmenterError::MatchFailed { .. } => PyRuntimeError::new_err(e.to_string()),
            _ => PyValueError::new_err(e.to_string()),
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[pyclass(module = "aunet._segmenter", name = "Segmenter", frozen)]
struct PySegmenter {
    inner: Arc<Segmenter>,
}

#[pymethods]
impl PySegmenter {
    /// `pairs` of (key, parameter) when `keyed` (the config mapping), else list-form entries
    /// (kind_or_start_regex, param_or_end_regex).
    #[new]
    fn new(pairs: Vec<(Option<String>, Option<String>)>, keyed: bool) -> PyResult<Self> {
        let strategies = pairs
            .iter()
            .map(|(a, b)| {
                if keyed {
                    Strategy::from_key(a.as_deref().unwrap_or(""), b.as_deref().unwrap_or(""))
                } else {
                    Strategy::from_pair(a.as_deref(), b.as_deref())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { inner: Arc::new(Segmenter::new(strategies)?) })
    }

    #[getter]
    fn depth(&self) -> usize {
        self.inner.depth()
    }

    fn levels<'py>(&self, py: Python<'py>, data: &[u8], bos: bool, eos: bool) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let out = py.detach(|| self.inner.levels_framed(data, bos, eos))?;
        Ok(out.into_pyarray(py))
    }

    /// Levels of every document, concatenated (the caller splits by document lengths).
    fn levels_many<'py>(&self, py: Python<'py>, docs: Vec<PyBackedBytes>, threads: Option<usize>) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let slices: Vec<&[u8]> = docs.iter().map(|d| &**d).collect();
        let threads = threads.unwrap_or_else(default_threads);
        let out = py.detach(|| self.inner.levels_many(&slices, threads))?;
        Ok(out.into_pyarray(py))
    }

    /// Levels of the documents data[offsets[i]..offsets[i+1]] (an Arrow binary array's
    /// buffers), concatenated: the result shares the input's offsets, less offsets[0].
    fn levels_offsets<'py>(
        &self,
        py: Python<'py>,
        data: PyReadonlyArray1<'py, u8>,
        offsets: PyReadonlyArray1<'py, i64>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let data = data.as_slice()?;
        let offsets = offsets.as_slice()?;
        let mut slices = Vec::with_capacity(offsets.len().saturating_sub(1));
        for (i, w) in offsets.windows(2).enumerate() {
            let (a, b) = (w[0], w[1]);
            if a < 0 || b < a || b as usize > data.len() {
                return Err(PyValueError::new_err(format!(
                    "row {i}: offsets {a}..{b} are not a valid range of a {}-byte data buffer",
                    data.len()
                )));
            }
            slices.push(&data[a as usize..b as usize]);
        }
        let threads = threads.unwrap_or_else(default_threads);
        let out = py.detach(|| self.inner.levels_many(&slices, threads))?;
        Ok(out.into_pyarray(py))
    }

    fn stream(&self) -> PyLevelStream {
        PyLevelStream { inner: Mutex::new(LevelStream::new(self.inner.clone())) }
    }
}

#[pyclass(module = "aunet._segmenter", name = "LevelStream", frozen)]
struct PyLevelStream {
    inner: Mutex<LevelStream>,
}

#[pymethods]
impl PyLevelStream {
    fn push<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let mut stream = self.inner.lock().map_err(|_| PyRuntimeError::new_err("stream poisoned"))?;
        let stream: &mut LevelStream = &mut stream;
        let out = py.detach(|| stream.push(data))?;
        Ok(out.into_pyarray(py))
    }

    #[getter]
    fn bytes_seen(&self) -> usize {
        self.inner.lock().map_or(0, |s| s.bytes_seen())
    }
}

/// Class flags of a code point (used by the tests that check the Unicode tables).
#[pyfunction]
fn class_of(cp: u32) -> u8 {
    crate::class_of(cp)
}

#[pymodule]
fn _segmenter(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::VERSION)?;
    m.add("WORD_START", crate::WORD_START)?;
    m.add("PRETOK_START", crate::PRETOK_START)?;
    m.add("PUNCT_START", crate::PUNCT_START)?;
    m.add_class::<PySegmenter>()?;
    m.add_class::<PyLevelStream>()?;
    m.add_function(wrap_pyfunction!(class_of, m)?)?;
    Ok(())
}
