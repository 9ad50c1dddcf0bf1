use logbus::{Log, LogOptions, StartAt};
use std::time::Duration;

#[test]
fn threads_across_segments() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let log = Log::create(dir.path(), &LogOptions::new().segment_capacity(1 << 16)).unwrap();
    let producers = 3u64;
    let per = 200_000u64;
    let mut handles = vec![];
    for p in 0..producers {
        let log = log.clone();
        handles.push(std::thread::spawn(move || {
            let mut prod = log.producer().unwrap();
            for i in 0..per {
                let mut buf = [0u8; 64];
                buf[..8].copy_from_slice(&p.to_le_bytes());
                buf[8..16].copy_from_slice(&i.to_le_bytes());
                let len = 16 + (i % 48) as usize;
                match i % 3 {
                    0 => {
                        prod.offer(&buf[..len]).unwrap();
                    }
                    1 => {
                        let mut c = prod.claim(len).unwrap();
                        c.copy_from_slice(&buf[..len]);
                        c.commit().unwrap();
                    }
                    _ => {
                        prod.offer_batch(&[&buf[..len]]).unwrap();
                    }
                }
            }
        }));
    }
    let mut consumer = log.consumer(StartAt::Earliest).unwrap();
    consumer.verify_checksums(true);
    let mut next = vec![0u64; producers as usize];
    let mut total = 0;
    while total < producers * per {
        let m = consumer
            .wait(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("stalled");
        let p = u64::from_le_bytes(m.payload()[..8].try_into().unwrap()) as usize;
        let i = u64::from_le_bytes(m.payload()[8..16].try_into().unwrap());
        assert_eq!(i, next[p]);
        assert_eq!(m.payload().len(), 16 + (i % 48) as usize);
        next[p] += 1;
        total += 1;
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(consumer.poll().unwrap().is_none());
    println!("tail {} segments {}", log.tail(), log.tail() >> 16);
}
