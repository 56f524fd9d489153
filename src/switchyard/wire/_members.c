/* The top-level members of a JSON object, found in one validating pass.

   `members(data)` answers a dict {key: (start, end)} giving where each top-level member's value
   lies in `data`, when `data` is one JSON object that this scanner reads plainly, or None when it
   does not, and the caller then reads the frame the general way (msgspec), which also words the
   error for invalid input. So the scanner only has to be sound where it answers; it answers None
   for anything unusual rather than decide it:
     - invalid JSON of any kind, invalid UTF-8 anywhere (RFC 3629, as Python's strict codec);
     - a raw CR or LF anywhere but after the object (JSON whitespace the general way turns into
       spaces before a value is spliced into a line-framed stream);
     - a \u escape of a UTF-16 surrogate that is not half of a pair (msgspec refuses it too);
     - a top-level key with an escape, or a key given twice;
     - nesting deeper than MAX_DEPTH.
   `members(data, within)` answers, in the same pass, the members of the object that the member
   `within` holds as well (a response's result, read one level deep): a pair of dicts, the second
   None when that member holds no object or one not read plainly (by the rules above).
   Strings are stepped over 16 bytes at a time where SSE2 is available, and 64 at a time while
   the plain runs are long where the CPU runs AVX2 (asked once, at load): a large result is mostly
   one long string, and this pass is what a gateway spends on it besides copying (a 64 KiB text:
   3.9 -> 2.4 us). Their UTF-8 is checked afterwards, and only when a byte >= 0x80 was met. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#endif

#define MAX_DEPTH 512

typedef const unsigned char *cursor;

/* What one pass has seen so far, besides where it is. */
typedef struct {
    cursor end;
    int line_break; /* a raw CR or LF between tokens */
    int escaped;    /* an escape in the last string stepped over */
    int wide;       /* a byte >= 0x80 in some string: the UTF-8 is checked after the pass */
} pass;

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Past JSON whitespace. */
static cursor
skip_space(pass *s, cursor p)
{
    while (p < s->end) {
        unsigned char c = *p;
        if (c == ' ' || c == '\t') {
            p++;
        }
        else if (c == '\n' || c == '\r') {
            s->line_break = 1;
            p++;
        }
        else {
            break;
        }
    }
    return p;
}

/* Whether [p, end) is valid UTF-8 (RFC 3629, as Python's strict codec: no overlong forms, no
   surrogates, nothing past U+10FFFF). */
static int
valid_utf8(cursor p, cursor end)
{
    while (p < end) {
        unsigned char c = *p, lo = 0x80, hi = 0xBF;
        Py_ssize_t tail;
        if (c < 0x80) {
#if defined(__SSE2__)
            /* to the next non-ASCII byte, 16 at a time; tried only from an ASCII byte, so text
               of non-ASCII characters pays nothing for it */
            if (end - p >= 16) {
                int mask = _mm_movemask_epi8(_mm_loadu_si128((const __m128i *)p));
                p += mask ? __builtin_ctz((unsigned int)mask) : 16;
                continue;
            }
#endif
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            tail = 1;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            tail = 2;
            if (c == 0xE0) {
                lo = 0xA0;
            }
            else if (c == 0xED) {
                hi = 0x9F;
            }
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            tail = 3;
            if (c == 0xF0) {
                lo = 0x90;
            }
            else if (c == 0xF4) {
                hi = 0x8F;
            }
        }
        else {
            return 0;
        }
        if (end - p <= tail || p[1] < lo || p[1] > hi) {
            return 0;
        }
        for (Py_ssize_t i = 2; i <= tail; i++) {
            if (p[i] < 0x80 || p[i] > 0xBF) {
                return 0;
            }
        }
        p += tail + 1;
    }
    return 1;
}

/* The code unit of a \uXXXX escape at p (p at the backslash), or -1. */
static long
escaped_unit(pass *s, cursor p)
{
    long unit = 0;
    if (s->end - p < 6 || p[0] != '\\' || p[1] != 'u') {
        return -1;
    }
    for (int i = 2; i < 6; i++) {
        unsigned char c = p[i];
        int digit;
        if (c >= '0' && c <= '9') {
            digit = c - '0';
        }
        else if (c >= 'a' && c <= 'f') {
            digit = c - 'a' + 10;
        }
        else if (c >= 'A' && c <= 'F') {
            digit = c - 'A' + 10;
        }
        else {
            return -1;
        }
        unit = unit * 16 + digit;
    }
    return unit;
}

/* Past one escape at p (p at the backslash), or NULL. A \u escape of a UTF-16 surrogate must
   be a high one followed by a low one. */
static cursor
skip_escape(pass *s, cursor p)
{
    s->escaped = 1;
    if (s->end - p < 2) {
        return NULL;
    }
    switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            return p + 2;
        case 'u': {
            long unit = escaped_unit(s, p);
            if (unit < 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) {
                return NULL;
            }
            if (unit < 0xD800 || unit > 0xDBFF) {
                return p + 6;
            }
            long low = escaped_unit(s, p + 6);
            return low >= 0xDC00 && low <= 0xDFFF ? p + 12 : NULL;
        }
        default:
            return NULL;
    }
}

#if defined(HAVE_AVX2_PATH)
/* Whether this CPU runs AVX2: asked once, when the module loads. */
static int use_avx2;

/* Past the bytes from p that need no look of their own (none a quote, a backslash or a
   control character), 64 at a time: the first byte that does, or a point under 64 bytes
   from the end, for the 16-byte steps to finish. A long string's cost is this loop. */
__attribute__((target("avx2"))) static inline __m256i
special_avx2(__m256i chunk)
{
    /* a quote, a backslash, or (unsigned) <= 0x1F: the maximum of both is 0x1F */
    const __m256i control = _mm256_set1_epi8(0x1F);
    return _mm256_or_si256(
        _mm256_or_si256(_mm256_cmpeq_epi8(chunk, _mm256_set1_epi8('"')),
                        _mm256_cmpeq_epi8(chunk, _mm256_set1_epi8('\\'))),
        _mm256_cmpeq_epi8(_mm256_max_epu8(chunk, control), control));
}

__attribute__((target("avx2"))) static cursor
skip_plain_avx2(pass *s, cursor p, cursor end)
{
    __m256i wide = _mm256_setzero_si256();
    while (end - p >= 64) {
        __m256i a = _mm256_loadu_si256((const __m256i *)p);
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + 32));
        __m256i special = _mm256_or_si256(special_avx2(a), special_avx2(b));
        if (!_mm256_testz_si256(special, special)) {
            /* the 16-byte steps go over this block again and say what stopped it */
            break;
        }
        wide = _mm256_or_si256(wide, _mm256_or_si256(a, b));
        p += 64;
    }
    s->wide |= _mm256_movemask_epi8(wide);
    return p;
}
#endif

/* Past the closing quote of a string whose opening quote is just before p, or NULL. */
static cursor
skip_string(pass *s, cursor p)
{
    cursor end = s->end;
    s->escaped = 0;
#if defined(HAVE_AVX2_PATH)
    /* Long steps pay where the plain runs are long; where escapes come every few bytes
       (a JSON text inside a string) each one would cost a long step that stops at once. So a
       long step that stops at once is not tried again until the short ones have met 64 plain
       bytes in a row. */
    int long_steps = use_avx2;
#endif
    for (;;) {
#if defined(HAVE_AVX2_PATH)
        if (long_steps && end - p >= 64) {
            cursor from = p;
            p = skip_plain_avx2(s, p, end);
            long_steps = p - from >= 64;
        }
#endif
#if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8('"');
        const __m128i backslash = _mm_set1_epi8('\\');
        const __m128i control = _mm_set1_epi8(0x1F);
#if defined(HAVE_AVX2_PATH)
        int plain = 0;     /* 16-byte steps in a row without a special byte */
        int hand_back = 0; /* ... enough of them: the long steps take over */
#endif
        while (end - p >= 16) {
            __m128i chunk = _mm_loadu_si128((const __m128i *)p);
            __m128i special = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(chunk, quote), _mm_cmpeq_epi8(chunk, backslash)),
                /* unsigned chunk <= 0x1F: the maximum of both is 0x1F */
                _mm_cmpeq_epi8(_mm_max_epu8(chunk, control), control));
            /* the sign bits of the chunk mark the bytes of non-ASCII characters */
            s->wide |= _mm_movemask_epi8(chunk);
            int mask = _mm_movemask_epi8(special);
            if (mask == 0) {
                p += 16;
#if defined(HAVE_AVX2_PATH)
                if (++plain == 4 && use_avx2) {
                    long_steps = hand_back = 1;
                    break;
                }
#endif
                continue;
            }
            p += __builtin_ctz((unsigned int)mask);
            break;
        }
#if defined(HAVE_AVX2_PATH)
        if (hand_back) {
            continue; /* p is at no special byte */
        }
#endif
#endif
        if (p >= end) {
            return NULL;
        }
        unsigned char c = *p;
        if (c == '"') {
            return p + 1;
        }
        if (c == '\\') {
            p = skip_escape(s, p);
            if (p == NULL) {
                return NULL;
            }
            continue;
        }
        if (c < 0x20) {
            return NULL;
        }
        s->wide |= c & 0x80;
        p++;
    }
}

static cursor
skip_digits(cursor p, cursor end)
{
    while (p < end && is_digit(*p)) {
        p++;
    }
    return p;
}

static cursor
skip_number(pass *s, cursor p)
{
    cursor end = s->end;
    if (*p == '-') {
        p++;
    }
    if (p >= end) {
        return NULL;
    }
    if (*p == '0') {
        p++;
    }
    else if (*p >= '1' && *p <= '9') {
        p = skip_digits(p + 1, end);
    }
    else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) {
            return NULL;
        }
        p = skip_digits(p, end);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= end || !is_digit(*p)) {
            return NULL;
        }
        p = skip_digits(p, end);
    }
    return p;
}

static cursor
skip_word(pass *s, cursor p, const char *word, Py_ssize_t len)
{
    if (s->end - p < len || memcmp(p, word, (size_t)len) != 0) {
        return NULL;
    }
    return p + len;
}

/* Past one JSON value starting at p, or NULL; containers nested at most `limit` deep (at most
   MAX_DEPTH). Iterative: nesting costs a byte of stack each. */
static cursor
skip_value(pass *s, cursor p, int limit)
{
    char open[MAX_DEPTH];
    int depth = 0;
    cursor end = s->end;

    for (;;) {
        /* a value starts at p */
        if (p >= end) {
            return NULL;
        }
        switch (*p) {
            case '{':
            case '[': {
                char opening = (char)*p;
                p = skip_space(s, p + 1);
                if (p < end && *p == (opening == '{' ? '}' : ']')) {
                    p++; /* empty: a whole value */
                    break;
                }
                if (depth == limit) {
                    return NULL;
                }
                open[depth++] = opening;
                if (opening == '{') {
                    goto member;
                }
                continue; /* an array's first value starts at p */
            }
            case '"':
                p = skip_string(s, p + 1);
                break;
            case 't':
                p = skip_word(s, p, "true", 4);
                break;
            case 'f':
                p = skip_word(s, p, "false", 5);
                break;
            case 'n':
                p = skip_word(s, p, "null", 4);
                break;
            default:
                if (*p != '-' && !is_digit(*p)) {
                    return NULL;
                }
                p = skip_number(s, p);
        }
        if (p == NULL) {
            return NULL;
        }
        /* after a value: close the containers it ends, then expect the next one's start */
        for (;;) {
            if (depth == 0) {
                return p;
            }
            p = skip_space(s, p);
            if (p >= end) {
                return NULL;
            }
            if (*p == (open[depth - 1] == '{' ? '}' : ']')) {
                p++;
                depth--;
                continue;
            }
            if (*p != ',') {
                return NULL;
            }
            p = skip_space(s, p + 1);
            break;
        }
        if (open[depth - 1] == '[') {
            continue;
        }
    member:
        /* a member of an object starts at p: "key" : value */
        if (p >= end || *p != '"') {
            return NULL;
        }
        p = skip_string(s, p + 1);
        if (p == NULL) {
            return NULL;
        }
        p = skip_space(s, p);
        if (p >= end || *p != ':') {
            return NULL;
        }
        p = skip_space(s, p + 1);
    }
}

/* Adds key: (start, end) to found. 1 when added, 0 when the key is there already, -1 on error. */
static int
add_member(PyObject *found, cursor key, cursor key_end, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *name = PyUnicode_DecodeUTF8((const char *)key, key_end - key, NULL);
    if (name == NULL) {
        return -1;
    }
    int seen = PyDict_Contains(found, name);
    if (seen != 0) {
        Py_DECREF(name);
        return seen < 0 ? -1 : 0;
    }
    PyObject *span = Py_BuildValue("(nn)", start, end);
    int stored = span != NULL ? PyDict_SetItem(found, name, span) : -1;
    Py_DECREF(name);
    Py_XDECREF(span);
    return stored < 0 ? -1 : 1;
}

typedef enum { READ, NOT_PLAIN, FAILED } outcome;

/* Reads the members of the object whose '{' is at *at into found, each value's span counted
   from base and nested at most `limit` deep, and moves *at past the object. Where `within`
   names a member whose value is an object, that object's members are read too, into *inner,
   spans counted from its '{' (*inner stays None when they are not read plainly). FAILED has a
   Python error set; NOT_PLAIN does not. */
static outcome
read_object(pass *s, cursor *at, cursor base, int limit, PyObject *found, const char *within,
            Py_ssize_t within_len, PyObject **inner)
{
    cursor p = skip_space(s, *at + 1);
    if (p < s->end && *p == '}') {
        *at = p + 1;
        return READ;
    }
    for (;;) {
        if (p >= s->end || *p != '"') {
            return NOT_PLAIN;
        }
        cursor key = p + 1;
        p = skip_string(s, key);
        if (p == NULL || s->escaped) {
            return NOT_PLAIN;
        }
        cursor key_end = p - 1;
        p = skip_space(s, p);
        if (p >= s->end || *p != ':') {
            return NOT_PLAIN;
        }
        cursor value = skip_space(s, p + 1);
        p = NULL;
        if (within != NULL && key_end - key == within_len &&
            memcmp(key, within, (size_t)within_len) == 0 && value < s->end && *value == '{') {
            PyObject *nested = PyDict_New();
            if (nested == NULL) {
                return FAILED;
            }
            cursor q = value;
            outcome got = read_object(s, &q, value, limit - 1, nested, NULL, 0, NULL);
            if (got == FAILED) {
                Py_DECREF(nested);
                return FAILED;
            }
            if (got == READ) {
                Py_SETREF(*inner, nested);
                p = q;
            }
            else {
                Py_DECREF(nested); /* valid but not plain, or invalid: the plain pass decides */
            }
        }
        if (p == NULL) {
            p = skip_value(s, value, limit);
            if (p == NULL) {
                return NOT_PLAIN;
            }
        }
        /* the key's UTF-8 is checked by the decoder here, before the pass has checked it */
        int added = add_member(found, key, key_end, value - base, p - base);
        if (added < 0) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                return FAILED;
            }
            PyErr_Clear();
            return NOT_PLAIN;
        }
        if (added == 0) {
            return NOT_PLAIN;
        }
        p = skip_space(s, p);
        if (p < s->end && *p == ',') {
            p = skip_space(s, p + 1);
            continue;
        }
        if (p < s->end && *p == '}') {
            *at = p + 1;
            return READ;
        }
        return NOT_PLAIN;
    }
}

/* The top-level members of the object in [base, base + size): a dict, or None; with `within`,
   a tuple of that dict and the members of the object that member holds (or None). */
static PyObject *
scan(cursor base, Py_ssize_t size, const char *within, Py_ssize_t within_len)
{
    pass s = {base + size, 0, 0, 0};
    cursor p = skip_space(&s, base);
    if (p >= s.end || *p != '{') {
        Py_RETURN_NONE;
    }
    PyObject *found = PyDict_New();
    if (found == NULL) {
        return NULL;
    }
    PyObject *inner = Py_NewRef(Py_None);
    outcome got = read_object(&s, &p, base, MAX_DEPTH, found, within, within_len, &inner);
    if (got == FAILED) {
        Py_DECREF(found);
        Py_DECREF(inner);
        return NULL;
    }
    /* a line break between tokens: the general way turns them into spaces. After the object,
       whitespace only: a line-framed reader's terminator may be there */
    if (got == NOT_PLAIN || s.line_break || skip_space(&s, p) != s.end ||
        (s.wide && !valid_utf8(base, s.end))) {
        Py_DECREF(found);
        Py_DECREF(inner);
        Py_RETURN_NONE;
    }
    if (within == NULL) {
        Py_DECREF(inner);
        return found;
    }
    PyObject *both = PyTuple_Pack(2, found, inner);
    Py_DECREF(found);
    Py_DECREF(inner);
    return both;
}

static PyObject *
members(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "members() takes data and, optionally, within");
        return NULL;
    }
    const char *within = NULL;
    Py_ssize_t within_len = 0;
    if (nargs == 2 && args[1] != Py_None) {
        within = PyUnicode_AsUTF8AndSize(args[1], &within_len);
        if (within == NULL) {
            return NULL;
        }
    }
    Py_buffer buffer;
    if (PyObject_GetBuffer(args[0], &buffer, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *found = scan((cursor)buffer.buf, buffer.len, within, within_len);
    PyBuffer_Release(&buffer);
    return found;
}

static PyMethodDef methods[] = {
    {"members", (PyCFunction)(void (*)(void))members, METH_FASTCALL,
     "members(data: bytes-like, within: str | None = None, /)\n\n"
     "Where each top-level member's value lies in a JSON object, or None when the object is not "
     "one this scanner reads plainly (then read it the general way). With `within`, a pair: "
     "those members, and the members of the object the member `within` holds (None when that "
     "is no object, or not one read plainly)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_members",
    .m_doc = "A validating pass over a JSON object's top level.",
    .m_size = 0, /* no state */
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__members(void)
{
#if defined(HAVE_AVX2_PATH)
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
#endif
    return PyModule_Create(&module);
}
