# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled per-record data path: ``aiotls._openssl.datapath.DataPath`` in C, call for call.

It calls OpenSSL only through the addresses of ``aiotls._openssl.fnptrs.openssl_functions()``,
cryptography's own entry points into the OpenSSL its wheel carries (the one pyOpenSSL's
objects live in); it links no OpenSSL. The interface, the results and the rules callers
keep are described in ``aiotls._openssl.datapath``; the constants and the thread's scratch buffer
come from there too. The GIL is held throughout: OpenSSL's calls here are short.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.limits cimport INT_MAX
from libc.stdint cimport uintptr_t

from aiotls._openssl import datapath as _datapath

# The C types of aiotls._openssl.fnptrs.FUNCTIONS, in its order (SSL* and BIO* are opaque here).
ctypedef int (*io_fn)(void *, void *, int) noexcept nogil
ctypedef int (*get_error_fn)(void *, int) noexcept nogil
ctypedef void (*clear_error_fn)() noexcept nogil
ctypedef unsigned long (*get_err_fn)() noexcept nogil
ctypedef long (*pending_fn)(void *, char **) noexcept nogil

cdef int CLOSE_NOTIFY = _datapath.CLOSE_NOTIFY
cdef int ERROR = _datapath.ERROR
cdef int PAUSED = _datapath.PAUSED
cdef int WANT_READ = _datapath.WANT_READ
cdef int ZERO_RETURN = _datapath.ZERO_RETURN
cdef int SSL_FAILURE = _datapath.SSL_FAILURE
cdef Py_ssize_t MAX_ERRORS = _datapath.MAX_ERRORS
cdef Py_ssize_t SCRATCH_SIZE = _datapath.SCRATCH_SIZE
cdef object protocol_callbacks = _datapath.protocol_callbacks


cdef inline void *_address(object value):
    return <void *><uintptr_t>value


@cython.final
cdef class DataPath:
    """The data path of one established connection (see ``aiotls._openssl.datapath``)."""

    cdef void *_ssl
    cdef void *_in
    cdef void *_out
    cdef io_fn _ssl_read
    cdef io_fn _ssl_write
    cdef get_error_fn _ssl_get_error
    cdef clear_error_fn _err_clear_error
    cdef get_err_fn _err_get_error
    cdef io_fn _bio_write
    cdef io_fn _bio_read
    cdef pending_fn _bio_pending
    cdef char *_scratch
    cdef object _scratch_buffer
    cdef object _owner
    cdef object _sink
    cdef object _data_received
    cdef object _get_buffer
    cdef object _buffer_updated
    cdef int _status
    cdef bint _delivering
    cdef bint _refed
    cdef public bint paused
    cdef readonly object error

    def __cinit__(self, ssl, bio_in, bio_out, functions, protocol, sink, owner=None):
        _datapath.check_arguments(ssl, bio_in, bio_out, functions)
        self._ssl = _address(ssl)
        self._in = _address(bio_in)
        self._out = _address(bio_out)
        self._ssl_read = <io_fn>_address(functions[0])
        self._ssl_write = <io_fn>_address(functions[1])
        self._ssl_get_error = <get_error_fn>_address(functions[2])
        self._err_clear_error = <clear_error_fn>_address(functions[3])
        self._err_get_error = <get_err_fn>_address(functions[4])
        self._bio_write = <io_fn>_address(functions[5])
        self._bio_read = <io_fn>_address(functions[6])
        self._bio_pending = <pending_fn>_address(functions[7])
        # Never resized: the fallback's cffi pointer into it holds an export.
        self._scratch_buffer = _datapath.thread_scratch()[0]
        self._scratch = PyByteArray_AS_STRING(self._scratch_buffer)
        self._owner = owner
        self._sink = sink
        self.error = None
        self.set_protocol(protocol)

    def set_protocol(self, protocol):
        """Deliver to ``protocol`` from now on (``Transport.set_protocol``)."""
        data_received, buffered = protocol_callbacks(protocol)
        self._data_received = data_received
        if buffered is None:
            self._get_buffer = self._buffer_updated = None
        else:
            self._get_buffer = buffered.get_buffer
            self._buffer_updated = buffered.buffer_updated

    def rebind(self, ssl, bio_in, bio_out):
        """Go on over the BIOs that replaced the old ones (a compaction), not inside feed()."""
        _datapath.check_addresses(ssl, bio_in, bio_out)
        self._ssl = _address(ssl)
        self._in = _address(bio_in)
        self._out = _address(bio_out)

    def feed(self, data):
        """Take a chunk of ciphertext and deliver the plaintext it completes."""
        cdef Py_buffer view
        cdef Py_ssize_t n
        cdef int written = 0
        if self._status:
            return self._status
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        n = view.len
        if 0 < n <= INT_MAX:
            written = self._bio_write(self._in, view.buf, <int>n)
        PyBuffer_Release(&view)
        if n > INT_MAX:
            raise OverflowError("feed(): a chunk of 2 GiB or more")
        if written != n:
            return self._fail(SSL_FAILURE)
        if self._delivering:
            self._refed = True
            return 0
        if self.paused:
            return PAUSED
        self._delivering = True
        try:
            return self._deliver()
        finally:
            self._delivering = False
            self._flush()

    cdef int _deliver(self) except -1:
        """Decrypt batch by batch into the protocol until OpenSSL has nothing more."""
        cdef Py_buffer view
        cdef char *ptr
        cdef Py_ssize_t size
        cdef int total, err, state
        cdef bint buffered
        while True:
            self._refed = False
            buffered = self._data_received is None
            if buffered:
                PyObject_GetBuffer(self._get_buffer(-1), &view, PyBUF_WRITABLE)
                ptr = <char *>view.buf
                size = min(view.len, <Py_ssize_t>INT_MAX)
                if not size:
                    PyBuffer_Release(&view)
                    raise RuntimeError("get_buffer() returned an empty buffer")
            else:
                ptr = self._scratch
                size = SCRATCH_SIZE
            err = self._read(ptr, <int>size, &total)
            if buffered:
                PyBuffer_Release(&view)  # before the protocol's code: it may resize its buffer
            state = 0
            if err == ZERO_RETURN:
                self._status |= CLOSE_NOTIFY
                state = CLOSE_NOTIFY
            elif err and err != WANT_READ:
                state = self._fail(err)
            if buffered:
                if total:
                    self._buffer_updated(total)
            elif total:
                self._data_received(PyBytes_FromStringAndSize(ptr, total))
            if state:
                return state
            if total < size and not self._refed:
                return 0
            if self.paused:
                return PAUSED

    cdef inline int _read(self, char *ptr, int size, int *total) noexcept:
        """SSL_read into ptr until it is full or OpenSSL and the incoming BIO are empty;
        SSL_get_error's code when a read failed, else 0."""
        cdef int n
        total[0] = 0
        self._err_clear_error()
        while True:
            n = self._ssl_read(self._ssl, ptr + total[0], size - total[0])
            if n <= 0:
                return self._ssl_get_error(self._ssl, n)
            total[0] += n
            # A short read consumed its record: done once the BIO is empty too.
            if total[0] == size or self._bio_pending(self._in, NULL) == 0:
                return 0

    def write(self, data):
        """Encrypt ``data`` and send it (at the end of feed() when inside one); 0 or ERROR."""
        cdef Py_buffer view
        cdef Py_ssize_t sent = 0
        cdef int n, err = 0
        if self._status & ERROR:
            return ERROR
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        if view.len > INT_MAX:
            PyBuffer_Release(&view)
            raise OverflowError("write(): 2 GiB or more in one call")
        while sent < view.len:
            n = self._ssl_write(self._ssl, <char *>view.buf + sent, <int>(view.len - sent))
            if n <= 0:
                err = self._ssl_get_error(self._ssl, n)
                break
            sent += n
        PyBuffer_Release(&view)
        if err:
            self._fail(err)
        if not self._delivering:
            self._flush()
        return self._status & ERROR

    cdef int _flush(self) except -1:
        """Send what the outgoing BIO holds as one bytes object, read into it at its size."""
        cdef long n = self._bio_pending(self._out, NULL)
        if n <= 0:
            return 0
        if n > INT_MAX:
            raise OverflowError("2 GiB or more of ciphertext waiting")
        out = PyBytes_FromStringAndSize(NULL, n)
        self._bio_read(self._out, PyBytes_AS_STRING(out), <int>n)
        self._sink(out)
        return 0

    cdef int _fail(self, int err) except -1:
        """Record a fatal error with the error queue (bounded), and report it."""
        cdef unsigned long code
        codes = []
        while len(codes) < MAX_ERRORS:
            code = self._err_get_error()
            if not code:
                break
            codes.append(code)
        self._err_clear_error()
        self.error = (err, tuple(codes))
        self._status |= ERROR
        return ERROR


@cython.final
cdef class RawProtocol:
    """The socket transport's protocol (see ``aiotls._openssl.datapath.RawProtocol``):
    chunks to ``datapath`` while one is set, without a Python frame; all else to ``owner``."""

    cdef object _owner
    cdef object _buf
    cdef public object datapath

    def __cinit__(self, owner, buffer):
        self._owner = owner
        self._buf = buffer
        self.datapath = None

    def connection_made(self, transport):
        self._owner._raw_connection_made(transport)

    def get_buffer(self, sizehint):
        return self._buf

    def buffer_updated(self, nbytes):
        self._received(self._buf[:nbytes])

    def data_received(self, data):
        self._received(data)

    cdef int _received(self, data) except -1:
        datapath = self.datapath
        if datapath is None:
            self._owner._raw_received(data)
            return 0
        try:
            flags = (<DataPath?>datapath).feed(data)
        except Exception as exc:  # the application's protocol raised
            self._owner._data_path_raised(exc)
            return 0
        if flags & (ERROR | CLOSE_NOTIFY):
            self._owner._data_path_ended(datapath, flags)
        return 0

    def eof_received(self):
        return self._owner._raw_eof()

    def connection_lost(self, exc):
        self._owner._raw_connection_lost(exc)

    def pause_writing(self):
        self._owner._raw_pause_writing()

    def resume_writing(self):
        self._owner._raw_resume_writing()
