//! The PROXY protocol (v1 and v2) header parser: no panic; a header parsed from the bytes
//! whole is "need more" on every shorter prefix, and the same on any longer one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine_protocols::proxy_protocol::parse;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Some((header, used))) = &whole {
        assert!(*used <= data.len());
        for cut in [0, used / 2, used.saturating_sub(1)] {
            if cut < *used {
                match parse(&data[..cut]) {
                    Ok(None) => {}
                    Ok(Some(_)) => panic!("a prefix of {used} bytes parsed as a header at {cut}"),
                    // A prefix can already show what it cannot become.
                    Err(e) => panic!("prefix {cut} of a valid header refused: {e:?} ({header:?})"),
                }
            }
        }
        assert_eq!(
            parse(&data[..*used]).ok().flatten().map(|(h, n)| (format!("{h:?}"), n)),
            Some((format!("{header:?}"), *used))
        );
    }
});
