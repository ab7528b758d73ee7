//! Masking personal data in customers' words before the service keeps them for others.
//!
//! A phrasing learned from a chat ("这个回答有用" on a message) is stored and
//! matched against later customers' messages; the message often carries the
//! customer's phone, e-mail, order number, name or address. [`Masker::mask`]
//! replaces each such span with a placeholder naming its kind (`[phone]`,
//! `[email]`, `[name]`, `[address]`, ...), so what is kept says *how* people
//! ask, never *who* asked. It masks:
//!
//! * the field extractor's personal fields: `phone`, `email`, `order_no`,
//!   `invoice_no`, `serial_no`, and every pack field declared `personal = true`;
//! * names introduced as names (我叫…, 姓名：…, 联系人…, a surname followed by
//!   先生/女士/小姐, "my name is …", "Mr./Ms. …");
//! * addresses: Chinese addresses (…省/市/区 … 路/街 … 号/室), "地址：…" and
//!   "address: …", English street addresses ("12 Baker Street");
//! * any other run of seven or more digits (ID card, bank card, account
//!   numbers).
//!
//! Masking errs on the side of hiding: a placeholder costs a learned
//! phrasing a few words, a leak costs a customer their privacy.

use regex::Regex;

use crate::decide::fields::FieldExtractor;
use crate::error::{Error, Result};
use crate::pack::FieldSpec;

/// Built-in extractor fields that are personal data.
const PERSONAL_FIELDS: &[&str] = &["phone", "email", "order_no", "invoice_no", "serial_no"];

/// Common Chinese surnames: a surname followed by 先生/女士/小姐 is a name.
const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤欧";

/// `(kind, pattern)`: a named group `v` is what is masked, else the whole match.
fn patterns() -> Vec<(&'static str, String)> {
    let street = r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Square|Sq)";
    vec![
        (
            "name",
            r"(?:我叫|我的名字是|本人姓名|姓名|名字|联系人|收件人|收货人)\s*(?:是|为|叫)?\s*[:：]?\s*(?P<v>\p{Han}{2,4}|[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2})".to_string(),
        ),
        (
            "name",
            format!(r"(?P<v>[{SURNAMES}]\p{{Han}}{{0,2}}?)(?:先生|女士|小姐|师傅)"),
        ),
        (
            "name",
            r"(?:(?i:my name is|my name's|this is|i am|i'm|name\s*[:：]|contact\s*[:：]|signed,?)\s+)(?P<v>[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2})".to_string(),
        ),
        (
            "name",
            r"(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+(?P<v>[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)".to_string(),
        ),
        (
            "address",
            r"(?:地址|住址|收货地址|送货地址|家住|住在)\s*(?:是|为|在)?\s*[:：]?\s*(?P<v>[^，,。；;！!？?\n]{2,80})".to_string(),
        ),
        (
            "address",
            r"\p{Han}{2,}?(?:省|自治区|市|区|县|州)\p{Han}*?[\p{Han}\d]*?(?:路|街|道|巷|胡同|村|镇|乡|小区|大厦|花园|公寓)[\p{Han}\d\-－]*?(?:号|栋|幢|单元|室|楼|层)(?:[\p{Han}\d\-－]*(?:号|栋|幢|单元|室|楼|层))*".to_string(),
        ),
        (
            "address",
            r"\p{Han}{2,}(?:路|街|道|巷)\d+号(?:[\p{Han}\d\-－]*(?:栋|幢|单元|室|楼|层))*".to_string(),
        ),
        (
            "address",
            r"(?i:address|addr\.?)\s*(?:is)?\s*[:：]?\s*(?P<v>[^,.;!?\n]{2,80})".to_string(),
        ),
        (
            "address",
            format!(r"\b\d{{1,5}}\s+(?:[A-Z][a-z]+\s+){{1,3}}{street}\b\.?(?:,?\s*(?:Apt|Apartment|Suite|Unit|Flat)\.?\s*[A-Za-z0-9-]+)?"),
        ),
        ("number", r"\d(?:[\s-]?\d){6,}".to_string()),
    ]
}

/// Masks personal data in text (see the module docs); built once per pack.
#[derive(Debug)]
pub struct Masker {
    fields: FieldExtractor,
    personal: Vec<String>,
    patterns: Vec<(&'static str, Regex, usize)>,
}

impl Masker {
    /// A masker for a pack's field specs (its `personal` fields are masked too).
    pub fn new(specs: &[FieldSpec]) -> Result<Masker> {
        let mut personal: Vec<String> = PERSONAL_FIELDS.iter().map(|s| s.to_string()).collect();
        personal.extend(specs.iter().filter(|s| s.personal).map(|s| s.name.clone()));
        let patterns = patterns()
            .into_iter()
            .map(|(kind, p)| {
                let regex = Regex::new(&p)
                    .map_err(|e| Error::InvalidInput(format!("privacy pattern for {kind}: {e}")))?;
                let group = regex
                    .capture_names()
                    .position(|n| n == Some("v"))
                    .unwrap_or(0);
                Ok((kind, regex, group))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Masker {
            fields: FieldExtractor::new(specs)?,
            personal,
            patterns,
        })
    }

    /// `text` with every personal span replaced by `[kind]`.
    pub fn mask(&self, text: &str) -> String {
        let mut spans: Vec<(usize, usize, &str)> = self
            .fields
            .extract(text)
            .into_iter()
            .filter(|f| self.personal.contains(&f.name))
            .filter_map(|f| {
                let (s, e) = f.span?;
                let kind = PERSONAL_FIELDS
                    .iter()
                    .copied()
                    .find(|k| *k == f.name)
                    .unwrap_or("personal");
                Some((s, e, kind))
            })
            .collect();
        for (kind, regex, group) in &self.patterns {
            for caps in regex.captures_iter(text) {
                if let Some(m) = caps.get(*group).or_else(|| caps.get(0)) {
                    let trimmed = m.as_str().trim_end();
                    if !trimmed.is_empty() {
                        spans.push((m.start(), m.start() + trimmed.len(), kind));
                    }
                }
            }
        }
        // Longest first at each start; overlapping spans merge into the first.
        spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for (start, end, kind) in spans {
            if start < pos {
                // Overlaps what is already masked: extend the masked region.
                pos = pos.max(end);
                continue;
            }
            out.push_str(&text[pos..start]);
            out.push('[');
            out.push_str(kind);
            out.push(']');
            pos = end;
        }
        out.push_str(&text[pos..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::new(&[FieldSpec {
            name: "member_id".into(),
            pattern: Some(r"VIP-[A-Z]{4}".into()),
            personal: true,
            ..FieldSpec::default()
        }])
        .unwrap()
    }

    #[test]
    fn contact_details_names_and_addresses_are_masked() {
        let m = masker();
        let cases = [
            (
                "我叫王小明，电话13812345678，邮箱 xiaoming@example.com，冰箱不制冷了",
                &["王小明", "13812345678", "xiaoming@example.com"][..],
                "冰箱不制冷了",
            ),
            (
                "地址：北京市朝阳区建国路88号3栋1201室，洗衣机漏水",
                &["建国路88号", "朝阳区"],
                "洗衣机漏水",
            ),
            (
                "上海市浦东新区张江路100号2单元501室的空调不制冷",
                &["张江路100号", "501室"],
                "空调不制冷",
            ),
            (
                "张先生的订单号JD2024061512345没到",
                &["张", "JD2024061512345"],
                "没到",
            ),
            (
                "Hi, my name is John Smith, I live at 221 Baker Street, my TV won't turn on",
                &["John", "Smith", "221 Baker Street"],
                "TV won't turn on",
            ),
            (
                "Mrs. Olsen here: card 6222 0212 3456 7890 was charged twice",
                &["Olsen", "6222", "7890"],
                "charged twice",
            ),
            (
                "身份证号110101199003074518，退款",
                &["110101199003074518"],
                "退款",
            ),
            (
                "member VIP-ABCD cannot log in",
                &["VIP-ABCD"],
                "cannot log in",
            ),
        ];
        for (text, hidden, kept) in cases {
            let masked = m.mask(text);
            for h in hidden {
                assert!(!masked.contains(h), "{h:?} still in {masked:?}");
            }
            assert!(masked.contains(kept), "{kept:?} lost from {masked:?}");
            assert!(masked.contains('['), "{masked:?}");
        }
    }

    #[test]
    fn the_question_itself_is_kept() {
        let m = masker();
        for text in [
            "空调显示E4是什么意思",
            "怎么退货",
            "我是新用户，怎么注册",
            "My AC model KFR-35GW shows error E4",
            "How do I cancel my order?",
        ] {
            assert_eq!(m.mask(text), text);
        }
    }
}
