//! The Python skin: argument conversion, GIL release, error mapping. No algorithm lives here.

use std::sync::{Arc, Mutex};

use numpy::ndarray::ArrayView1;
use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::pybacked::PyBackedBytes;

use crate::{canonical_param, kind_of_key, kind_of_name, LevelStream, Segmenter, SegmenterError, Strategy};

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

    /// Levels of every document as a list of arrays, each a view into one buffer. The views
    /// are made here: splitting the concatenation in Python (`np.split`) cost about 0.7 us per
    /// document, which made a batch of short documents slower than one `levels` call each.
    fn levels_list<'py>(&self, py: Python<'py>, docs: Vec<PyBackedBytes>, threads: Option<usize>) -> PyResult<Bound<'py, PyList>> {
        let slices: Vec<&[u8]> = docs.iter().map(|d| &**d).collect();
        let threads = threads.unwrap_or_else(default_threads);
        let out = py.detach(|| self.inner.levels_many(&slices, threads))?;
        let flat = out.into_pyarray(py);
        let base = flat.data() as *const u8;
        let mut off = 0usize;
        let views = slices.iter().map(|d| {
            // SAFETY: [off, off + len) lies inside `flat`'s buffer, which is never reallocated
            // and is kept alive by every view (its base object).
            let view = unsafe { ArrayView1::from_shape_ptr(d.len(), base.add(off)) };
            off += d.len();
            unsafe { PyArray1::borrow_from_array(&view, flat.clone().into_any()) }
        });
        PyList::new(py, views)
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

/// A piece of a JSONL block as the reader hands it over: (buffer, start, end) of whole lines,
/// or the byte length of a line too long to keep.
#[derive(FromPyObject)]
enum PieceArg {
    Lines(PyBackedBytes, usize, usize),
    // The length is the caller's to report; here the line is only counted.
    Long(#[allow(dead_code)] i64),
}

/// A line of a block that the scanner left to the caller: `long` (over the cap, skipped), or
/// else bytes `start..end` of piece `piece`'s buffer, to parse with `json`; its text goes after
/// the first `documents_before` documents the scanner took.
#[pyclass(module = "aunet._segmenter", name = "OtherLine", frozen, get_all)]
struct PyOtherLine {
    long: bool,
    line: i64,
    piece: usize,
    start: usize,
    end: usize,
    documents_before: usize,
}

/// One kept field's values on the lines the scanner took: strings as (data, offsets), and one
/// validity byte per line (0: null).
#[pyclass(module = "aunet._segmenter", name = "KeptColumn", frozen, get_all)]
struct PyKeptColumn {
    data: Py<PyArray1<u8>>,
    offsets: Py<PyArray1<i64>>,
    valid: Py<PyArray1<u8>>,
}

/// What `jsonl_texts` returns: the texts of the lines it took as (data, offsets) with their
/// line numbers, the lines it left (`others`), the last line number seen, and one `KeptColumn`
/// per name in `keep`.
#[pyclass(module = "aunet._segmenter", name = "JsonlTexts", frozen, get_all)]
struct PyJsonlTexts {
    data: Py<PyArray1<u8>>,
    offsets: Py<PyArray1<i64>>,
    lines: Py<PyArray1<i64>>,
    others: Vec<Py<PyOtherLine>>,
    last_line: i64,
    kept: Vec<Py<PyKeptColumn>>,
}

/// The text field of each line of `pieces` (see `jsonl.rs`).
#[pyfunction]
#[pyo3(signature = (pieces, first_line, field=None, keep=Vec::new(), max_depth=512))]
fn jsonl_texts(
    py: Python<'_>,
    pieces: Vec<PieceArg>,
    first_line: i64,
    field: Option<PyBackedBytes>,
    keep: Vec<PyBackedBytes>,
    max_depth: usize,
) -> PyResult<PyJsonlTexts> {
    let mut runs = Vec::with_capacity(pieces.len());
    for (i, p) in pieces.iter().enumerate() {
        runs.push(match p {
            PieceArg::Lines(buf, start, end) => {
                if start > end || *end > buf.len() {
                    return Err(PyValueError::new_err(format!("piece {i}: {start}..{end} is not a range of a {}-byte buffer", buf.len())));
                }
                crate::jsonl::Piece::Lines(&buf[*start..*end])
            }
            PieceArg::Long(_) => crate::jsonl::Piece::Long,
        });
    }
    let field = match &field {
        Some(name) => crate::jsonl::Field::Named(name),
        None => crate::jsonl::Field::TextOrContent,
    };
    let keep: Vec<&[u8]> = keep.iter().map(|k| &**k).collect();
    let out = py.detach(|| crate::jsonl::extract_texts(&runs, first_line, field, &keep, max_depth));
    // Ranges are reported relative to each piece's buffer, as the caller slices it.
    let others = out
        .others
        .iter()
        .map(|o| {
            let base = match &pieces[o.piece] {
                PieceArg::Lines(_, start, _) => *start,
                PieceArg::Long(_) => 0,
            };
            let other = PyOtherLine {
                long: o.long,
                line: o.line,
                piece: o.piece,
                start: base + o.start,
                end: base + o.end,
                documents_before: o.documents_before,
            };
            Py::new(py, other)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let kept = out
        .kept
        .into_iter()
        .map(|k| {
            let column = PyKeptColumn {
                data: k.data.into_pyarray(py).unbind(),
                offsets: k.offsets.into_pyarray(py).unbind(),
                valid: k.valid.into_pyarray(py).unbind(),
            };
            Py::new(py, column)
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyJsonlTexts {
        data: out.data.into_pyarray(py).unbind(),
        offsets: out.offsets.into_pyarray(py).unbind(),
        lines: out.lines.into_pyarray(py).unbind(),
        others,
        last_line: out.last_line,
        kept,
    })
}

/// The stages of a strategy list as the core reads them, without compiling or refusing any:
/// for each pair, (kind, canonical parameter) when it names a built-in kind (by key prefix
/// when `keyed`, else as a list-form kind name), None for a custom (start, end) pair.
#[pyfunction]
fn strategy_stages(pairs: Vec<(Option<String>, Option<String>)>, keyed: bool) -> Vec<Option<(&'static str, String)>> {
    pairs
        .iter()
        .map(|(first, param)| {
            let kind = first.as_deref().and_then(if keyed { kind_of_key } else { kind_of_name });
            kind.map(|k| (k, canonical_param(k, param.as_deref().unwrap_or(""))))
        })
        .collect()
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
    m.add_class::<PyJsonlTexts>()?;
    m.add_class::<PyOtherLine>()?;
    m.add_class::<PyKeptColumn>()?;
    m.add_function(wrap_pyfunction!(class_of, m)?)?;
    m.add_function(wrap_pyfunction!(jsonl_texts, m)?)?;
    m.add_function(wrap_pyfunction!(strategy_stages, m)?)?;
    Ok(())
}
