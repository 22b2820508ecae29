//! The serde `Deserializer` over a [`Node`] that decodes the way Go does. serde hands every
//! derived struct's field names (after `rename`s) to `deserialize_struct`; there each object key is
//! mapped to its field by [`field_for`], the last duplicate wins, and a `null` for a field counts
//! as absent. Everything else (maps, sequences, scalars) is passed through unchanged.
//!
//! `#[serde(flatten)]` structs and internally tagged or untagged enums are decoded through
//! `deserialize_map`/`deserialize_any` and so see the keys as sent: wire types must not use them.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

use crate::error::DeError;
use crate::fold::field_for;
use crate::node::Node;

/// A deserializer reading one [`Node`].
#[derive(Debug, Clone, Copy)]
pub struct NodeDeserializer<'a>(pub &'a Node);

static NULL: Node = Node::Null;

impl<'a> NodeDeserializer<'a> {
    fn unexpected(&self) -> Unexpected<'a> {
        match self.0 {
            Node::Null => Unexpected::Unit,
            Node::Bool(b) => Unexpected::Bool(*b),
            Node::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Unexpected::Unsigned(u),
                (_, Some(i)) => Unexpected::Signed(i),
                _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Node::String(s) => Unexpected::Str(s),
            Node::Array(_) => Unexpected::Seq,
            Node::Object(_) => Unexpected::Map,
        }
    }
}

/// The entries of an object decoded into a struct with `fields`: keys renamed to their field,
/// the last duplicate kept, fields given `null` left out. Unknown keys stay as sent.
fn struct_entries<'a>(
    entries: &'a [(String, Node)],
    fields: &[&'static str],
) -> Vec<(&'a str, &'a Node)> {
    let mut out: Vec<(&'a str, &'a Node)> = Vec::with_capacity(entries.len());
    let mut known = Vec::new();
    for (key, value) in entries {
        let (name, is_field) = match field_for(key, fields) {
            Some(f) => (f, true),
            None => (key.as_str(), false),
        };
        match out.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => {
                out.push((name, value));
                if is_field {
                    known.push(name);
                }
            }
        }
    }
    out.retain(|(k, v)| !(matches!(v, Node::Null) && known.contains(k)));
    out
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.items
            .next()
            .map(|n| seed.deserialize(NodeDeserializer(n)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    entries: std::vec::IntoIter<(&'a str, &'a Node)>,
    value: Option<&'a Node>,
}

impl<'a> Map<'a> {
    fn new(entries: Vec<(&'a str, &'a Node)>) -> Self {
        Map {
            entries: entries.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(BorrowedStrDeserializer::new(k)).map(Some)
            }
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        seed.deserialize(NodeDeserializer(self.value.take().unwrap_or(&NULL)))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum as a string (unit variant) or a one-key object (`{"Variant": content}`).
struct Enum<'a> {
    variant: &'a str,
    content: Option<&'a Node>,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = DeError;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let v = seed.deserialize(BorrowedStrDeserializer::new(self.variant))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Enum<'de> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.content {
            None | Some(Node::Null) => Ok(()),
            Some(n) => Err(de::Error::invalid_type(
                NodeDeserializer(n).unexpected(),
                &"unit variant",
            )),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(NodeDeserializer(self.content.unwrap_or(&NULL)))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        NodeDeserializer(self.content.unwrap_or(&NULL)).deserialize_seq(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        NodeDeserializer(self.content.unwrap_or(&NULL)).deserialize_struct("", fields, visitor)
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (_, Some(i)) => visitor.visit_i64(i),
                _ => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Node::String(s) => visitor.visit_borrowed_str(s),
            Node::Array(a) => visitor.visit_seq(Seq { items: a.iter() }),
            Node::Object(e) => {
                visitor.visit_map(Map::new(e.iter().map(|(k, v)| (k.as_str(), v)).collect()))
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Go: `null` into a slice is a nil (empty) slice.
        match self.0 {
            Node::Null => visitor.visit_seq(Seq { items: [].iter() }),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Go: `null` into a map is a nil (empty) map; map keys are matched exactly.
        match self.0 {
            Node::Null => visitor.visit_map(Map::new(Vec::new())),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            // Go leaves a struct given `null` at its zero value; here its required fields are
            // then reported missing.
            Node::Null => visitor.visit_map(Map::new(Vec::new())),
            Node::Object(e) => visitor.visit_map(Map::new(struct_entries(e, fields))),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Node::String(s) => visitor.visit_enum(Enum {
                variant: s,
                content: None,
            }),
            Node::Object(e) if e.len() == 1 => visitor.visit_enum(Enum {
                variant: &e[0].0,
                content: Some(&e[0].1),
            }),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

impl<'de> IntoDeserializer<'de, DeError> for NodeDeserializer<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}
